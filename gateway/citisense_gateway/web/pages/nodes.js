import * as api from "../api.js";
import { ago, badge, clear, field, h, select, showError, table, time, toast } from "../ui.js";

export async function render(root, [id]) {
  return id ? detail(root, Number(id)) : list(root);
}

async function list(root) {
  const filters = h("form", { class: "row", id: "node-filters" },
    field("Role", select("role", [["", "any"], ["lighting", "lighting"], ["parking", "parking"], ["air", "air"]])),
    field("Zone", select("zone", [["", "any"]])),
    field("State", select("state", [["", "any"], ["online", "online"], ["stale", "stale"], ["offline", "offline"], ["never-seen", "never seen"]])));
  const box = h("div");
  root.append(h("h1", {}, "Nodes"), h("div", { class: "panel" }, filters), box);
  const zones = await api.get("/zones");
  for (const z of zones) filters.zone.append(h("option", { value: z.zone }, z.zone));

  async function refresh() {
    const query = new URLSearchParams();
    for (const name of ["role", "zone", "state"]) if (filters[name].value) query.set(name, filters[name].value);
    const nodes = await api.get(`/nodes?${query}`);
    clear(box).append(table([
      ["Node", (n) => n.node_id],
      ["Label", (n) => n.label],
      ["Role", (n) => n.role],
      ["Zone", (n) => n.zone],
      ["Status", (n) => badge(n.status)],
      ["Last heard", (n) => ago(n.last_seen)],
      ["State", (n) => n.schedule ? `schedule ${n.schedule.name ?? "–"} v${n.schedule.reported_version ?? "?"}${n.schedule.in_sync ? "" : " (updating)"}`
        : n.bay_state ? badge(n.bay_state) : ""],
      ["Firmware", (n) => n.firmware],
    ], nodes, { id: "node-table", onclick: (n) => { location.hash = `#/nodes/${n.node_id}`; } }));
  }
  filters.addEventListener("change", refresh);
  await refresh();
  return { refresh, every: 5000 };
}

function kv(pairs) {
  return h("table", {}, h("tbody", {}, pairs.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v ?? "–")))));
}

async function detail(root, nodeId) {
  const box = h("div");
  root.append(h("p", {}, h("a", { href: "#/nodes" }, "← all nodes")), box);

  async function refresh() {
    const n = await api.get(`/nodes/${nodeId}`);
    const reading = n.last_telemetry;
    const error = h("div");
    const maintenance = api.can("technician") ? h("div", { class: "row" },
      ["identify", "recalibrate", "reboot"].map((op) => h("button", {
        type: "button", class: op === "reboot" ? "danger" : "secondary", id: `cmd-${op}`,
        onclick: async () => {
          if (op === "reboot" && !confirm(`Reboot node ${nodeId}?`)) return;
          try {
            const c = await api.post(`/nodes/${nodeId}/commands`, { op });
            toast(`${op}: command ${c.command_id} ${c.state}`);
          } catch (err) { showError(error, err); }
        },
      }, op)), error) : null;
    clear(box).append(
      h("h1", {}, n.label || `node ${n.node_id}`, " ", badge(n.status)),
      h("div", { class: "grid" },
        h("div", { class: "panel" }, h("h2", {}, "Node"), kv([
          ["id", n.node_id], ["role", n.role], ["zone", n.zone], ["street", n.street],
          ["location", n.lat !== null ? `${n.lat.toFixed(5)}, ${n.lon.toFixed(5)}` : null],
          ["last heard", `${ago(n.last_seen)} via ${n.via || "–"}`], ["firmware", n.firmware],
          ["board", n.board], ["boot", n.boot], ["reset cause", n.reset_cause],
          ["config", n.config_hash],
        ]), maintenance),
        h("div", { class: "panel" }, h("h2", {}, "Twin: desired and reported"), kv([
          ...(n.schedule ? [["schedule", n.schedule.name], ["desired version", n.schedule.desired_version],
            ["reported version", n.schedule.reported_version], ["in sync", n.schedule.in_sync ? "yes" : "no"]] : []),
          ...(n.role === "parking" ? [["bay", n.bay_state], ["reserved until", time(n.reserved_until)]] : []),
          ...Object.entries(n.health).map(([k, v]) => [k, v]),
        ])),
        h("div", { class: "panel", id: "last-telemetry" }, h("h2", {}, "Last telemetry"), reading ? [
          h("p", { class: "muted" }, time(reading.at)),
          kv(Object.entries(reading.values)),
          reading.flags.length ? h("p", { class: "error" }, reading.flags.join(", ")) : null,
        ] : h("p", { class: "muted" }, "none yet"))),
      h("h2", {}, "Events"),
      table([["At", (e) => time(e.at)], ["Event", (e) => e.event], ["Detail", (e) => Object.values(e.detail).join(", ")]], n.events),
      h("h2", {}, "Commands"),
      table([["Id", (c) => c.command_id], ["Op", (c) => c.op], ["State", (c) => badge(c.state)],
        ["Result", (c) => c.result ?? ""], ["By", (c) => c.created_by], ["At", (c) => time(c.created_at)],
        ["Note", (c) => c.note]], n.commands, { id: "node-commands" }));
  }
  await refresh();
  return { refresh, every: 5000 };
}
