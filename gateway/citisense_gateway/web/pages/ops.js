import * as api from "../api.js";
import { ago, badge, clear, h, table, time } from "../ui.js";

function live(root, title, load, columns, options) {
  const box = h("div");
  root.append(h("h1", {}, title), box);
  const refresh = async () => { clear(box).append(table(columns, await load(), options)); };
  return refresh().then(() => ({ refresh, every: 5000 }));
}

const KINDS = { node_offline: "node offline", lamp_fault: "lamp fault", sensor_fault: "sensor fault" };

export function alarms(root) {
  return live(root, "Alarms", () => api.get("/alarms"), [
    ["Alarm", (a) => badge(KINDS[a.kind], "failed")], ["Node", (a) => h("a", { href: `#/nodes/${a.node_id}` }, a.label || a.node_id)],
    ["Role", (a) => a.role], ["Zone", (a) => a.zone], ["Street", (a) => a.street],
    ["Shown by a message of", (a) => `${time(a.at)} (${ago(a.at)})`], ["Detail", (a) => a.detail],
  ], { id: "alarm-table", empty: "no alarms" });
}

export function commands(root) {
  return live(root, "Commands", () => api.get("/commands?limit=200"), [
    ["Id", (c) => c.command_id], ["Node", (c) => h("a", { href: `#/nodes/${c.node_id}` }, c.node_id)],
    ["Op", (c) => c.op], ["State", (c) => badge(c.state)], ["Answer", (c) => c.result ?? ""],
    ["Tries", (c) => c.attempts], ["By", (c) => c.created_by], ["Issued", (c) => time(c.created_at)],
    ["Expires", (c) => time(c.expires_at)], ["Note", (c) => c.note],
  ], { id: "command-table", empty: "no commands yet" });
}

export function audit(root) {
  return live(root, "Audit log", () => api.get("/audit?limit=200"), [
    ["At", (e) => time(e.at)], ["User", (e) => e.user], ["Action", (e) => e.action],
    ["Target", (e) => e.target], ["Details", (e) => h("code", {}, JSON.stringify(e.details))],
  ], { id: "audit-table", empty: "nothing changed yet" });
}
