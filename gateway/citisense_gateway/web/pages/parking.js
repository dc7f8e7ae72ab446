import * as api from "../api.js";
import { lineChart } from "../charts.js";
import { badge, clear, field, h, select, showError, table, time, toast } from "../ui.js";

function bar(z) {
  const part = (n, colour) => h("div", { style: `width:${(100 * n) / Math.max(1, z.bays)}%;background:${colour}` });
  return h("div", { class: "bar", title: `${z.free} free, ${z.reserved} reserved, ${z.occupied} occupied, ${z.unknown} unknown` },
    part(z.free, "var(--ok)"), part(z.reserved, "var(--warn)"), part(z.occupied, "var(--bad)"), part(z.unknown, "var(--off)"));
}

export async function render(root, [zoneName]) {
  const summary = h("div", { class: "grid", id: "parking-zones" });
  const detail = h("div");
  root.append(h("h1", {}, "Parking"), summary, detail);
  const zone = zoneName || (await api.get("/parking/zones"))[0]?.zone;

  async function refresh() {
    const zones = await api.get("/parking/zones");
    clear(summary).append(...zones.map((z) => h("a", { href: `#/parking/${encodeURIComponent(z.zone)}`, class: "panel", style: "text-decoration:none;color:inherit", "data-zone": z.zone },
      h("h2", {}, z.zone), h("div", { class: "kpi" }, `${z.free}`, h("span", { class: "muted", style: "font-size:1rem" }, ` of ${z.bays} free`)),
      bar(z), h("p", { class: "muted" }, `${z.occupied} occupied · ${z.reserved} reserved · ${z.unknown} unknown`))));
    if (zone) await showZone();
  }

  const error = h("div", { id: "reserve-error" });
  const bayList = h("div");
  const history = h("div");
  let reserveForm = null;

  async function showZone() {
    const z = await api.get(`/parking/zones/${encodeURIComponent(zone)}`);
    clear(bayList).append(table([
      ["Bay", (b) => b.label || b.node_id], ["Node", (b) => b.node_id], ["State", (b) => badge(b.state)],
      ["Reserved until", (b) => b.reserved_until ? badge(time(b.reserved_until), "reserved") : ""],
      ["Sensor", (b) => badge(b.status)],
      ["", (b) => b.reserved_until && api.can("operator") ? h("button", { type: "button", class: "secondary", "data-release": b.node_id,
        onclick: async (event) => {
          event.stopPropagation();
          try { await api.del(`/parking/reservations/${b.node_id}`); toast(`bay ${b.node_id} released`); await showZone(); } catch (err) { showError(error, err); }
        } }, "release") : ""],
    ], z.bays, { id: "bay-table" }));
    if (reserveForm && !reserveForm.dataset.filled) {
      const bays = reserveForm.querySelector("#reserve-node");
      clear(bays).append(...z.bays.map((b) => h("option", { value: b.node_id }, `${b.label || b.node_id}`)));
      reserveForm.dataset.filled = "1";
    }
    clear(history).append(z.history.length
      ? h("div", { class: "legend" }, h("span", { style: "--c:#1e8e3e" }, "free"), h("span", { style: "--c:#c5221f" }, "occupied"))
      : "", z.history.length
      ? lineChart([
        { name: "free", color: "#1e8e3e", points: z.history.map((p) => [p.at, p.free]) },
        { name: "occupied", color: "#c5221f", points: z.history.map((p) => [p.at, p.occupied]) }], { id: "occupancy-chart" })
      : h("p", { class: "muted" }, "no history yet"));
  }

  if (zone) {
    if (api.can("operator")) {
      const hours = h("input", { id: "reserve-hours", type: "number", min: 0.1, max: 168, step: 0.1, value: 2 });
      reserveForm = h("form", { class: "row", id: "reserve-form" },
        field("Bay", h("select", { id: "reserve-node" })), field("For hours", hours),
        h("button", { type: "submit", id: "reserve-button" }, "Reserve"), error);
      reserveForm.addEventListener("submit", async (event) => {
        event.preventDefault();
        const nodeId = Number(reserveForm.querySelector("#reserve-node").value);
        const until = Math.round(Date.now() / 1000 + Number(hours.value) * 3600);
        try {
          await api.post("/parking/reservations", { node_id: nodeId, until });
          clear(error);
          toast(`bay ${nodeId} reserved until ${time(until)}`);
          await showZone();
        } catch (err) { showError(error, err); }
      });
    }
    clear(detail).append(h("h2", {}, `Zone ${zone}`), h("div", { class: "panel" }, reserveForm, bayList),
      h("h2", {}, "Occupancy, last 24 hours"), h("div", { class: "panel" }, history));
  } else {
    detail.append(h("p", { class: "muted" }, "No parking bays registered."));
  }
  await refresh();
  return { refresh, every: 5000 };
}
