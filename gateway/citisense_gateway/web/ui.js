// Small DOM helpers: elements are built, never parsed from strings, so data stays text.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "style") setStyle(el, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, value);
  }
  append(el, children);
  return el;
}

// Through the CSS object model: the page's CSP forbids style attributes.
function setStyle(el, text) {
  for (const rule of text.split(";")) {
    const at = rule.indexOf(":");
    if (at > 0) el.style.setProperty(rule.slice(0, at).trim(), rule.slice(at + 1).trim());
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const SVG = "http://www.w3.org/2000/svg";
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value);
  }
  append(el, children);
  return el;
}

export function clear(el) { while (el.firstChild) el.firstChild.remove(); return el; }

export function time(t) {
  if (t === null || t === undefined) return "–";
  return new Date(t * 1000).toLocaleString([], {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function clock(t, timeZone) {
  return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", timeZone });
}

export function ago(t) {
  if (t === null || t === undefined) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - t));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

export function badge(text, kind = text) {
  return h("span", { class: `status ${String(kind).replace(/ /g, "-")}` }, text);
}

// rows: objects; columns: [heading, (row) => cell content]
export function table(columns, rows, { onclick, id, empty = "nothing here" } = {}) {
  const body = rows.length
    ? rows.map((row) => h("tr", {
      class: onclick ? "clickable" : undefined,
      onclick: onclick ? () => onclick(row) : undefined,
      "data-key": row.node_id ?? row.command_id ?? row.name ?? row.username ?? undefined,
    }, columns.map(([, cell]) => h("td", {}, cell(row)))))
    : [h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty))];
  return h("table", { id }, h("thead", {}, h("tr", {}, columns.map(([name]) => h("th", {}, name)))),
    h("tbody", {}, body));
}

export function field(label, input) { return h("label", {}, label, input); }

export function select(name, options, value) {
  return h("select", { name, id: name },
    options.map(([v, text]) => h("option", { value: v, selected: String(v) === String(value) }, text)));
}

export function toast(message) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}

// Shows an API error under a form, naming the fields it concerns.
export function showError(el, err) {
  clear(el);
  el.append(h("div", { class: "error", role: "alert" }, err.message));
}
