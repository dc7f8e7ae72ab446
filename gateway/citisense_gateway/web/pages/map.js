import * as api from "../api.js";
import { fleetMap, ROLE_COLOURS } from "../charts.js";
import { ago, badge, clear, h } from "../ui.js";

export async function render(root) {
  const mapBox = h("div");
  const side = h("div", { class: "panel", id: "map-side" });
  root.append(h("h1", {}, "Map"),
    h("div", { class: "legend" }, Object.entries(ROLE_COLOURS).map(([role, c]) =>
      h("span", { style: `--c:${c}` }, role)),
    h("span", { class: "alarm" }, "alarm"),
    h("span", { class: "muted" }, "faded: offline or stale")),
    h("div", { class: "map-wrap" }, mapBox, side));

  const show = (node) => {
    clear(side).append(h("h2", {}, node.label || `node ${node.node_id}`),
      h("p", {}, badge(node.status), " ", node.role, " · ", node.zone, " · ", node.street),
      h("p", { class: "muted" }, `last heard ${ago(node.last_seen)}`),
      node.schedule ? h("p", {}, `schedule ${node.schedule.name ?? "none"} v${node.schedule.reported_version ?? "?"}`) : null,
      node.bay_state ? h("p", {}, "bay ", badge(node.bay_state)) : null,
      h("a", { href: `#/nodes/${node.node_id}` }, "details →"));
  };

  async function refresh() {
    const [nodes, alarms] = await Promise.all([api.get("/nodes"), api.get("/alarms")]);
    const alarmed = new Set(alarms.map((a) => a.node_id));
    clear(mapBox).append(fleetMap(nodes, { onclick: show, alarmed }));
    if (!side.dataset.touched) {
      const counts = {};
      for (const n of nodes) counts[n.status] = (counts[n.status] || 0) + 1;
      clear(side).append(h("h2", {}, `${nodes.length} nodes`),
        h("p", {}, Object.entries(counts).map(([k, v]) => [badge(`${v} ${k}`, k), " "])),
        h("h2", {}, `${alarms.length} alarms`),
        h("ul", {}, alarms.slice(0, 8).map((a) => h("li", {}, `${a.label}: ${a.kind.replace("_", " ")}`))),
        h("p", { class: "muted" }, "Click a node for its status."));
    }
  }
  side.addEventListener("click", () => { side.dataset.touched = "1"; });
  mapBox.addEventListener("click", () => { side.dataset.touched = "1"; });
  await refresh();
  return { refresh, every: 5000 };
}
