// The dashboard: a hash router over small page modules, refreshing live pages.
import * as api from "./api.js";
import { clear, h, toast } from "./ui.js";
import * as login from "./pages/login.js";
import * as map from "./pages/map.js";
import * as nodes from "./pages/nodes.js";
import * as schedules from "./pages/schedules.js";
import * as overrides from "./pages/overrides.js";
import * as parking from "./pages/parking.js";
import * as air from "./pages/air.js";
import * as ops from "./pages/ops.js";
import * as users from "./pages/users.js";

const PAGES = {
  map: map.render,
  nodes: nodes.render,
  schedules: schedules.render,
  overrides: overrides.render,
  parking: parking.render,
  air: air.render,
  alarms: ops.alarms,
  commands: ops.commands,
  audit: ops.audit,
  users: users.render,
};

let timer = null;
let generation = 0;

async function alarmBadge() {
  try {
    const alarms = await api.get("/alarms");
    const el = document.getElementById("alarm-count");
    el.textContent = alarms.length;
    el.hidden = alarms.length === 0;
  } catch { /* shown by the page itself */ }
}

function chrome(user) {
  document.getElementById("nav").hidden = !user;
  document.getElementById("who").hidden = !user;
  document.getElementById("who-name").textContent = user ? `${user.username} (${user.role})` : "";
  for (const el of document.querySelectorAll("[data-role]")) el.hidden = !api.can(el.dataset.role);
}

async function route() {
  const mine = ++generation;
  clearInterval(timer);
  const main = clear(document.getElementById("main"));
  const current = api.session.get();
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  if (!current) {
    chrome(null);
    login.render(main, () => { location.hash = "#/map"; route(); });
    return;
  }
  chrome(current.user);
  const page = PAGES[name] || PAGES.map;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === `#/${name || "map"}`);
  }
  try {
    const live = await page(main, rest.map(decodeURIComponent));
    alarmBadge();
    if (live && live.refresh && mine === generation) {
      timer = setInterval(async () => {
        try { await live.refresh(); } catch (err) { toast(err.message); }
        alarmBadge();
      }, live.every || 5000);
    }
  } catch (err) {
    if (mine === generation) main.append(h("p", { class: "error", role: "alert" }, err.message));
  }
}

api.whenUnauthorized(() => { api.session.clear(); route(); });
window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", async () => {
    await api.logout();
    location.hash = "#/login";
    route();
  });
  route();
});
