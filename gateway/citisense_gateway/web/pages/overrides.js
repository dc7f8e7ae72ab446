import * as api from "../api.js";
import { badge, clear, clock, field, h, select, showError, table, toast } from "../ui.js";

const UNITS = { s: 1, min: 60, h: 3600 };

export async function render(root) {
  const zones = (await api.get("/zones")).filter((z) => z.lighting > 0);
  const activeBox = h("div", { id: "active-overrides" });
  const error = h("div", { id: "override-error" });
  const kind = select("target-kind", [["zone", "zone"], ["street", "street"], ["node_ids", "node ids"]]);
  const zoneSelect = select("target-zone", zones.map((z) => [z.zone, z.zone]));
  const text = h("input", { id: "target-text", placeholder: "street name, or ids: 101, 102", hidden: true });
  const level = h("input", { id: "override-level", type: "number", min: 0, max: 100, value: 30 });
  const duration = h("input", { id: "override-duration", type: "number", min: 0, value: 30 });
  const unit = select("override-unit", Object.keys(UNITS).map((u) => [u, u]), "min");
  kind.addEventListener("change", () => {
    zoneSelect.hidden = kind.value !== "zone";
    text.hidden = kind.value === "zone";
  });

  function target() {
    if (kind.value === "zone") return { zone: zoneSelect.value };
    if (kind.value === "street") return { street: text.value.trim() };
    return { node_ids: text.value.split(/[\s,]+/).filter(Boolean).map(Number) };
  }

  async function send(seconds) {
    try {
      const result = await api.post("/overrides", { ...target(), level: Number(level.value), duration_s: seconds });
      clear(error);
      toast(seconds ? `override sent to ${result.nodes.length} lamps` : `override ended on ${result.nodes.length} lamps`);
      await refresh();
    } catch (err) { showError(error, err); }
  }

  const form = h("form", { class: "row", id: "override-form" },
    field("Target", kind), field("Which", h("span", {}, zoneSelect, text)),
    field("Level %", level), field("For", h("span", {}, duration, " ", unit)),
    h("button", { type: "submit", id: "override-submit" }, "Set override"),
    h("button", { type: "button", class: "secondary", id: "override-end", onclick: () => send(0) }, "End override"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send(Math.round(Number(duration.value) * UNITS[unit.value]));
  });

  async function refresh() {
    const active = await api.get("/overrides");
    const now = Date.now() / 1000;
    clear(activeBox).append(table([
      ["Node", (o) => o.node_id], ["Zone", (o) => o.zone], ["Street", (o) => o.street],
      ["Level", (o) => `${o.level} %`], ["Until", (o) => clock(o.ends_at)],
      ["Left", (o) => `${Math.max(0, Math.round(o.ends_at - now))} s`],
      ["Command", (o) => badge(o.command_state)], ["By", (o) => o.created_by],
    ], active, { id: "override-table", empty: "no override in force: lamps follow their schedules" }));
  }

  root.append(h("h1", {}, "Overrides"),
    api.can("operator") ? h("div", { class: "panel" }, h("p", { class: "muted" },
      "An override holds lamps at a level for a while, then their schedule resumes by itself."), form, error) : null,
    h("h2", {}, "In force"), activeBox);
  await refresh();
  return { refresh, every: 2000 };
}
