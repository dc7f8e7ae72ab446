import * as api from "../api.js";
import { lineChart } from "../charts.js";
import { badge, clear, h, table, time } from "../ui.js";

export async function render(root, [nodeId]) {
  const indexBox = h("div");
  const chartBox = h("div", { class: "panel" });
  root.append(h("h1", {}, "Air quality"),
    h("p", { class: "muted" }, "European Air Quality Index: NO₂ hourly, particulate matter as 24-hour means; samples flagged warm-up, humid, faulty or uncalibrated do not count."),
    indexBox, chartBox);

  async function refresh() {
    const index = await api.get("/air/index");
    const chosen = Number(nodeId) || index[0]?.node_id;
    clear(indexBox).append(table([
      ["Sensor", (a) => a.label || a.node_id], ["Zone", (a) => a.zone],
      ["Index", (a) => a.level ? badge(a.name, a.name) : badge("no data", "none")],
      ["Driven by", (a) => a.driver ?? ""], ["PM2.5 24 h", (a) => a.pm25_24h ?? "–"],
      ["PM10 24 h", (a) => a.pm10_24h ?? "–"], ["NO₂ 1 h", (a) => a.no2_1h ?? "–"],
      ["Flags", (a) => a.flags.join(", ")], ["Hour", (a) => time(a.at)],
    ], index, { id: "air-index", onclick: (a) => { location.hash = `#/air/${a.node_id}`; } }));
    if (!chosen) return;
    const series = await api.get(`/air/nodes/${chosen}/series`);
    const pts = (key) => series.points.map((p) => [p.at, p[key]]);
    clear(chartBox).append(h("h2", {}, `Sensor ${chosen}: µg/m³, last 24 hours`),
      h("div", { class: "legend" }, h("span", { style: "--c:#7b3fa0" }, "PM2.5"), h("span", { style: "--c:#2a9d8f" }, "PM10"), h("span", { style: "--c:#c5221f" }, "NO₂")),
      lineChart([{ name: "pm25", color: "#7b3fa0", points: pts("pm25") },
        { name: "pm10", color: "#2a9d8f", points: pts("pm10") },
        { name: "no2", color: "#c5221f", points: pts("no2") }], { id: "air-chart" }));
  }
  await refresh();
  return { refresh, every: 15000 };
}
