// Charts and the fleet map, drawn as SVG from data alone: no tiles, nothing from the internet.
import { s, clock } from "./ui.js";

const W = 900, H = 260, PAD = { l: 44, r: 16, t: 16, b: 30 };

function scale(d0, d1, r0, r1) {
  const k = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0);
  return (v) => r0 + (v - d0) * k;
}

const STEPS = [60, 300, 600, 1800, 3600, 2 * 3600, 6 * 3600, 12 * 3600, 86400];

function timeTicks(start, end) {
  const step = STEPS.find((s) => (end - start) / s <= 12) || 86400;
  const ticks = [];
  for (let t = Math.ceil(start / step) * step; t <= end; t += step) ticks.push(t);
  return ticks;
}

function frame(x, y, start, end, yTicks, unit, zone) {
  const parts = [];
  for (const v of yTicks) {
    parts.push(s("line", { class: "grid", x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v) }));
    parts.push(s("text", { x: PAD.l - 6, y: y(v) + 4, "text-anchor": "end" }, `${v}${unit}`));
  }
  for (const t of timeTicks(start, end)) {
    parts.push(s("line", { class: "grid", x1: x(t), x2: x(t), y1: PAD.t, y2: H - PAD.b }));
    parts.push(s("text", { x: x(t), y: H - 10, "text-anchor": "middle" }, clock(t, zone)));
  }
  parts.push(s("line", { class: "axis", x1: PAD.l, x2: W - PAD.r, y1: H - PAD.b, y2: H - PAD.b }));
  return parts;
}

// Tonight's level: a step line from `changes` [{at, level}], dusk and dawn marked, in the
// schedule's own time zone.
export function levelChart({ start, end, changes, dusk, dawn, timezone }) {
  const x = scale(start, end, PAD.l, W - PAD.r);
  const y = scale(0, 100, H - PAD.b, PAD.t);
  let d = "";
  changes.forEach((c, i) => {
    const next = i + 1 < changes.length ? changes[i + 1].at : end;
    d += `${i ? "L" : "M"}${x(Math.max(c.at, start))},${y(c.level)} L${x(next)},${y(c.level)} `;
  });
  const marks = [];
  for (const [at, name] of [[dusk, "dusk"], [dawn, "dawn"]]) {
    if (at === null || at === undefined || at < start || at > end) continue;
    marks.push(s("line", { class: "sun", x1: x(at), x2: x(at), y1: PAD.t, y2: H - PAD.b }),
      s("text", { x: x(at) + 4, y: PAD.t + 10, "data-mark": name }, `${name} ${clock(at, timezone)}`));
  }
  return s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "dim level tonight", id: "level-chart" },
  frame(x, y, start, end, [0, 25, 50, 75, 100], "%", timezone),
  s("path", { class: "series", d, stroke: "#e0a800", "data-series": "level" }), marks);
}

// Lines over time: series [{name, color, points: [[t, v | null]]}].
export function lineChart(series, { unit = "", id } = {}) {
  const all = series.flatMap((x) => x.points.filter((p) => p[1] !== null));
  const ts = all.map((p) => p[0]);
  const vs = all.map((p) => p[1]);
  const start = ts.length ? Math.min(...ts) : Date.now() / 1000 - 86400;
  const end = ts.length ? Math.max(...ts) : Date.now() / 1000;
  const top = Math.max(10, ...vs) * 1.1;
  const step = top > 200 ? 100 : top > 60 ? 25 : top > 20 ? 10 : 5;
  const yTicks = [];
  for (let v = 0; v <= top; v += step) yTicks.push(v);
  const x = scale(start, end === start ? start + 1 : end, PAD.l, W - PAD.r);
  const y = scale(0, yTicks[yTicks.length - 1] || 1, H - PAD.b, PAD.t);
  const paths = series.map((one) => {
    let d = "";
    let pen = "M";
    for (const [t, v] of one.points) {
      if (v === null) { pen = "M"; continue; }
      d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)} `;
      pen = "L";
    }
    return s("path", { class: "series", d, stroke: one.color, "data-series": one.name });
  });
  return s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", id },
    frame(x, y, start, end, yTicks, unit), paths);
}

export const ROLE_COLOURS = { lighting: "#e0a800", parking: "#1f5fbf", air: "#2a9d8f" };

// The fleet drawn from node coordinates: streets join their nodes, nodes are dots.
export function fleetMap(nodes, { onclick, alarmed = new Set(), width = 900, height = 620 } = {}) {
  const placed = nodes.filter((n) => n.lat !== null && n.lon !== null);
  const svg = s("svg", { class: "map", viewBox: `0 0 ${width} ${height}`, id: "fleet-map",
    role: "img", "aria-label": "map of the nodes" });
  if (!placed.length) return svg;
  const lats = placed.map((n) => n.lat), lons = placed.map((n) => n.lon);
  const midLat = (Math.min(...lats) + Math.max(...lats)) / 2;
  const k = Math.cos((midLat * Math.PI) / 180); // metres per degree of longitude shrink
  const xs = placed.map((n) => n.lon * k), ys = placed.map((n) => n.lat);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const span = Math.max(x1 - x0, y1 - y0, 1e-4);
  const unit = Math.min((width - 80) / Math.max(x1 - x0, span / 4), (height - 80) / Math.max(y1 - y0, span / 4));
  const px = (n) => width / 2 + (n.lon * k - (x0 + x1) / 2) * unit;
  const py = (n) => height / 2 - (n.lat - (y0 + y1) / 2) * unit;
  const streets = {};
  for (const n of placed) (streets[n.street || ""] ||= []).push(n);
  for (const [name, members] of Object.entries(streets)) {
    if (!name || members.length < 2) continue;
    // A street is drawn straight between its two nodes farthest apart.
    let ends = [members[0], members[1]], best = -1;
    for (const a of members) for (const b of members) {
      const d = (px(a) - px(b)) ** 2 + (py(a) - py(b)) ** 2;
      if (d > best) { best = d; ends = [a, b]; }
    }
    const [a, b] = ends[0].node_id < ends[1].node_id ? ends : [ends[1], ends[0]];
    svg.append(s("line", { class: "street", x1: px(a), y1: py(a), x2: px(b), y2: py(b) }));
    const len = Math.sqrt(best) || 1;
    const ux = (px(a) - px(b)) / len, uy = (py(a) - py(b)) / len;
    svg.append(s("text", { class: "street-name", x: px(a) + ux * 16, y: py(a) + uy * 16 + 4,
      "text-anchor": ux < 0 ? "end" : "start" }, name));
  }
  for (const n of placed) {
    const title = `${n.label || "node " + n.node_id} — ${n.role}, ${n.status}`;
    svg.append(s("circle", {
      class: `node ${n.status}${alarmed.has(n.node_id) ? " alarm" : ""}`,
      cx: px(n).toFixed(1), cy: py(n).toFixed(1), r: 8, fill: ROLE_COLOURS[n.role],
      "data-node": n.node_id, onclick: onclick ? () => onclick(n) : undefined,
    }, s("title", {}, title)));
  }
  return svg;
}
