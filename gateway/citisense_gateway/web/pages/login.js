import * as api from "../api.js";
import { h, showError } from "../ui.js";

export function render(root, done) {
  const error = h("div");
  const form = h("form", { id: "login-form" },
    h("label", {}, "User name", h("input", { name: "username", id: "username", autocomplete: "username", required: true })),
    h("label", {}, "Password", h("input", { name: "password", id: "password", type: "password", autocomplete: "current-password", required: true })),
    h("button", { type: "submit", id: "login-button" }, "Log in"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.login(form.username.value, form.password.value);
      done();
    } catch (err) { showError(error, err); }
  });
  root.append(h("div", { class: "panel login" }, h("h1", {}, "Log in to citisense"), form));
}
