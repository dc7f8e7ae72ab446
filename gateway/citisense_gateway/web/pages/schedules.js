import * as api from "../api.js";
import { levelChart } from "../charts.js";
import { badge, clear, field, h, select, showError, table, time, toast } from "../ui.js";

const DEFAULT = {
  timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
  steps: [{ at: "dusk", level: 100 }, { at: "23:00", level: 50 }, { at: "dawn", offset: -15, level: 0 }],
};

function stepRow(step, onchange) {
  const kind = step.at === "dusk" || step.at === "dawn" ? step.at : "time";
  const row = h("tr", { class: "step" },
    h("td", {}, select("anchor", [["dusk", "dusk"], ["dawn", "dawn"], ["time", "clock time"]], kind)),
    h("td", {}, h("input", { name: "clock", type: "time", value: kind === "time" ? step.at.padStart(5, "0") : "23:00", hidden: kind !== "time" })),
    h("td", {}, h("input", { name: "offset", type: "number", min: -720, max: 720, value: step.offset ?? 0, hidden: kind === "time", title: "minutes from the sun event" })),
    h("td", {}, h("input", { name: "level", type: "number", min: 0, max: 100, value: step.level })),
    h("td", {}, h("button", { type: "button", class: "secondary", onclick: () => { row.remove(); onchange(); } }, "remove")));
  row.addEventListener("change", () => {
    const a = row.querySelector("[name=anchor]").value;
    row.querySelector("[name=clock]").hidden = a !== "time";
    row.querySelector("[name=offset]").hidden = a === "time";
    onchange();
  });
  row.addEventListener("input", onchange);
  return row;
}

function readSteps(tbody) {
  return [...tbody.querySelectorAll("tr.step")].map((row) => {
    const anchor = row.querySelector("[name=anchor]").value;
    const level = Number(row.querySelector("[name=level]").value);
    if (anchor === "time") return { at: row.querySelector("[name=clock]").value, level };
    const offset = Number(row.querySelector("[name=offset]").value);
    return offset ? { at: anchor, offset, level } : { at: anchor, level };
  });
}

export async function render(root, [selected]) {
  const listBox = h("div");
  const editor = h("div", { class: "panel", id: "schedule-editor" });
  const rollout = h("div", { class: "panel", id: "rollout" });
  root.append(h("h1", {}, "Lighting schedules"), h("div", { class: "grid" }, listBox, editor), rollout);
  const zones = (await api.get("/zones")).filter((z) => z.lighting > 0);
  let current = null; // name of the schedule being edited, null for a new one

  async function showList() {
    const all = await api.get("/schedules");
    clear(listBox).append(h("div", { class: "panel" },
      table([["Name", (x) => x.name], ["Version", (x) => x.version], ["Nodes", (x) => x.assigned],
        ["Saved", (x) => `${time(x.created_at)} by ${x.created_by}`]], all,
      { id: "schedule-list", onclick: (x) => { location.hash = `#/schedules/${x.name}`; }, empty: "no schedules yet" }),
      api.can("operator") ? h("p", {}, h("button", { type: "button", id: "new-schedule", onclick: () => { location.hash = "#/schedules"; edit(null, DEFAULT); } }, "New schedule")) : null));
    return all;
  }

  function edit(name, definition) {
    current = name;
    const error = h("div", { id: "schedule-error" });
    const chartBox = h("div", { id: "preview" });
    const steps = h("tbody");
    let pending = null;
    const changed = () => { clearTimeout(pending); pending = setTimeout(preview, 300); };
    for (const step of definition.steps) steps.append(stepRow(step, changed));
    const nameInput = h("input", { id: "schedule-name", value: name ?? "", disabled: name !== null, required: true });
    const zoneInput = h("input", { id: "schedule-timezone", value: definition.timezone ?? "UTC" });
    const failsafeInput = h("input", { id: "schedule-failsafe", type: "number", min: 0, max: 100, value: definition.failsafe ?? 100 });
    const previewZone = select("preview-zone", zones.map((z) => [z.zone, z.zone]));
    const dateInput = h("input", { id: "preview-date", type: "date" });
    const form = h("form", { id: "schedule-form" },
      h("div", { class: "row" },
        field("Name", nameInput), field("Time zone", zoneInput), field("Fail-safe %", failsafeInput)),
      h("h2", {}, "Steps"),
      h("table", { class: "steps", id: "steps" }, h("thead", {}, h("tr", {}, ["From", "Time", "Offset (min)", "Level %", ""].map((x) => h("th", {}, x)))), steps),
      h("p", {}, h("button", { type: "button", class: "secondary", id: "add-step", onclick: () => { steps.append(stepRow({ at: "23:00", level: 50 }, changed)); changed(); } }, "Add step")),
      definition.exceptions ? h("p", { class: "muted" }, `${definition.exceptions.length} dated exception(s) kept as saved`) : null,
      h("div", { class: "row" }, field("Preview for zone", previewZone), field("Night of", dateInput)),
      chartBox, error,
      api.can("operator") ? h("button", { type: "submit", id: "save-schedule" }, name ? "Save new version" : "Save schedule") : null);
    form.addEventListener("change", changed);

    function read() {
      const d = { timezone: zoneInput.value || undefined, failsafe: Number(failsafeInput.value), steps: readSteps(steps) };
      if (definition.exceptions) d.exceptions = definition.exceptions;
      return d;
    }

    async function preview() {
      const body = { definition: read(), zone: previewZone.value || undefined };
      if (dateInput.value) body.date = dateInput.value;
      if (!body.zone) { clear(chartBox).append(h("p", { class: "muted" }, "no lighting zone to preview")); return; }
      try {
        const p = await api.post("/schedules/preview", body);
        clear(error);
        clear(chartBox).append(h("p", { class: "muted" }, `Night of ${p.date} in ${p.timezone}: dusk and dawn dashed`), levelChart(p));
      } catch (err) { showError(error, err); }
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const saved = current === null
          ? await api.post("/schedules", { name: nameInput.value, ...read() })
          : await api.put(`/schedules/${current}`, read());
        toast(`saved ${saved.name} version ${saved.version}`);
        location.hash = `#/schedules/${saved.name}`;
      } catch (err) { showError(error, err); }
    });
    clear(editor).append(h("h2", {}, name ? `Edit ${name}` : "New schedule"), form);
    preview();
  }

  function assignForm(name, refresh) {
    const error = h("div");
    const assignZone = select("assign-zone", zones.map((z) => [z.zone, z.zone]));
    const form = h("form", { class: "row", id: "assign-form" },
      field("Assign to zone", assignZone),
      h("button", { type: "submit", id: "assign-button" }, "Assign and push"), error);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const result = await api.post(`/schedules/${name}/assign`, { zone: assignZone.value });
        clear(error);
        toast(`version ${result.version} pushed to ${result.nodes.length} nodes`);
        await refresh();
      } catch (err) { showError(error, err); }
    });
    return form;
  }

  function showRollout(name) {
    const title = h("h2");
    const body = h("div");
    async function refresh() {
      const r = await api.get(`/schedules/${name}/rollout`);
      title.textContent = `Rollout of ${name} (latest version ${r.latest_version})`;
      clear(body).append(
        h("p", { id: "rollout-summary" }, Object.entries(r.summary).map(([k, v]) => [badge(`${k}: ${v}`, k), " "])),
        table([["Node", (n) => n.node_id], ["Zone", (n) => n.zone], ["Street", (n) => n.street],
          ["Node status", (n) => badge(n.status)], ["Desired", (n) => n.desired_version],
          ["Reported", (n) => n.reported_version ?? "–"], ["Push", (n) => badge(n.state)], ["Answer", (n) => n.result ?? ""]],
        r.nodes, { id: "rollout-table", empty: "not assigned to any node" }));
    }
    clear(rollout).append(title, api.can("operator") ? assignForm(name, refresh) : null, body);
    return refresh;
  }

  const all = await showList();
  const chosen = all.find((x) => x.name === selected);
  if (chosen) {
    edit(chosen.name, chosen.definition);
    const rolloutRefresh = showRollout(chosen.name);
    await rolloutRefresh();
    return { refresh: async () => { await rolloutRefresh(); await showList(); }, every: 2000 };
  }
  if (api.can("operator")) edit(null, DEFAULT);
  else clear(editor).append(h("p", { class: "muted" }, "Pick a schedule to see it."));
  clear(rollout).append(h("p", { class: "muted" }, "Save or pick a schedule to assign it and follow its rollout."));
  return null;
}
