import * as api from "../api.js";
import { clear, field, h, select, showError, table, time, toast } from "../ui.js";

const ROLES = ["viewer", "operator", "technician", "admin"];

export async function render(root) {
  if (!api.can("admin")) {
    root.append(h("p", { class: "error" }, "Only an admin manages accounts."));
    return null;
  }
  const box = h("div");
  const error = h("div");
  const name = h("input", { id: "new-username", required: true, autocomplete: "off" });
  const password = h("input", { id: "new-password", type: "password", minlength: 10, required: true, autocomplete: "new-password" });
  const role = select("new-role", ROLES.map((r) => [r, r]), "viewer");
  const form = h("form", { class: "row", id: "user-form" }, field("User name", name), field("Password (10+ characters)", password),
    field("Role", role), h("button", { type: "submit" }, "Add user"), error);

  async function refresh() {
    const users = await api.get("/users");
    clear(box).append(table([
      ["User", (u) => u.username],
      ["Role", (u) => {
        const pick = select(`role-${u.username}`, ROLES.map((r) => [r, r]), u.role);
        pick.addEventListener("change", async () => {
          try { await api.patch(`/users/${u.username}`, { role: pick.value }); toast(`${u.username} is now ${pick.value}`); } catch (err) { showError(error, err); await refresh(); }
        });
        return pick;
      }],
      ["Created", (u) => `${time(u.created_at)} by ${u.created_by}`],
      ["", (u) => h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Remove ${u.username}?`)) return;
        try { await api.del(`/users/${u.username}`); await refresh(); } catch (err) { showError(error, err); }
      } }, "remove")],
    ], users, { id: "user-table" }));
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.post("/users", { username: name.value, password: password.value, role: role.value });
      clear(error); form.reset(); await refresh();
    } catch (err) { showError(error, err); }
  });
  root.append(h("h1", {}, "Users"), h("div", { class: "panel" }, form), box);
  await refresh();
  return null;
}
