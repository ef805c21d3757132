// Small DOM helpers the pages share: the message banner, the state pill, event logs.

export const $ = (selector, root = document) => root.querySelector(selector);

/** A new element: `text` sets its text, every other attribute is set as given; `children` are appended. */
export function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

/** Show `text` in the banner at `level` (error | warn | info); an empty text hides it. */
export function setBanner(banner, level, text) {
  banner.dataset.level = level || "info";
  banner.textContent = text || "";
}

/** The state pill in the header: idle | connecting | live | error. */
export function setPill(pill, state, text) {
  pill.dataset.state = state;
  pill.textContent = text;
}

/**
 * Prepend one line to an event log (newest first), keeping at most `limit` lines.
 * @param {{kind: string, time?: string, text: string, cls?: string, data?: object}} entry
 */
export function logLine(list, { kind, time = "", text, cls = kind, data = {} }, limit = 200) {
  const item = document.createElement("li");
  item.className = `${cls} fresh`;
  for (const [name, value] of Object.entries(data)) item.dataset[name] = String(value);
  const when = document.createElement("span");
  when.className = "num";
  when.textContent = time;
  const what = document.createElement("span");
  what.className = "kind";
  what.textContent = kind;
  const detail = document.createElement("span");
  detail.textContent = text;
  item.append(when, what, detail);
  list.prepend(item);
  while (list.children.length > limit) list.lastElementChild.remove();
  return item;
}

/** Keep a radio group's labels marked (for browsers without :has()). */
export function markChecked(group) {
  for (const label of group.querySelectorAll("label")) {
    const input = label.querySelector("input");
    label.classList.toggle("checked", Boolean(input && input.checked));
  }
}

export function median(values) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}
