// Where the live stream's onsets go besides this page: the server's configured OSC targets (a checkbox each,
// filled from GET /api/v3/osc/targets) and a stream name (the stream option `name`, which
// `run.py listen --follow NAME` follows across reconnects). Both remembered in localStorage.

import { fetchJson } from "./api.js";
import { element } from "./ui.js";

const NAME_MAX_CHARS = 64;

export class OscPanel {
  /**
   * @param {HTMLElement} container  where the controls go
   * @param {{storageKey: string, onChange?: (changed: object) => void}} options
   *   `onChange` gets the stream options that changed: `{osc: [...]}` or `{name: "..."}`.
   */
  constructor(container, { storageKey, onChange = () => {} }) {
    this.storageKey = storageKey;
    this.onChange = onChange;
    const saved = this._restore();
    this.chosen = new Set(Array.isArray(saved.osc) ? saved.osc.filter((n) => typeof n === "string") : []);
    this.name = typeof saved.name === "string" ? saved.name.slice(0, NAME_MAX_CHARS) : "";
    this.available = null; // target names the server offers, once known
    this._build(container);
  }

  /** The stream options to start a stream with: only targets the server offers. */
  values() {
    const osc = this.available ? [...this.chosen].filter((n) => this.available.includes(n)) : [];
    return { osc, name: this.name };
  }

  /** Ask the server which targets it has and show them; the page works on without them. */
  async load() {
    try {
      const { targets } = await fetchJson("/api/v3/osc/targets", { cache: "no-store" });
      this.available = targets.map((t) => t.name);
      this._renderTargets(targets);
    } catch (err) {
      this.available = [];
      this.hint.textContent = `OSC targets unavailable: ${err.message}`;
    }
  }

  _build(container) {
    this.container = container;
    this.nameBox = element("input", {
      type: "text", id: "stream-name", maxlength: String(NAME_MAX_CHARS), placeholder: "none",
      spellcheck: "false", autocomplete: "off", style: "width: 140px; padding: 2px 6px;",
      "aria-label": "Stream name",
    });
    this.nameBox.value = this.name;
    this.nameBox.addEventListener("change", () => {
      this.name = this.nameBox.value.trim().slice(0, NAME_MAX_CHARS);
      this._save();
      this.onChange({ name: this.name });
    });
    this.list = element("div", { id: "osc-targets", class: "osc-targets" });
    this.hint = element("p", { class: "hint", id: "osc-hint", text: "Asking the server for its OSC targets…" });
    container.append(
      element("label", { class: "field" }, [
        element("span", {}, [element("span", { text: "Stream name" }), this.nameBox]),
      ]),
      element("p", { class: "hint", text: "Lets `run.py listen --follow NAME` find this stream again after a reconnect." }),
      element("div", { class: "field" }, [element("span", { text: "Send onsets as OSC to" }), this.list]),
      this.hint,
    );
  }

  _renderTargets(targets) {
    this.list.replaceChildren();
    if (!targets.length) {
      this.hint.textContent = "This server has no OSC targets configured (run.py --osc-targets NAME=HOST:PORT).";
      return;
    }
    this.hint.textContent = "Targets configured on the server; the server sends, so no terminal is needed.";
    for (const target of targets) {
      const box = element("input", { type: "checkbox", value: target.name, "data-osc-target": target.name });
      box.checked = this.chosen.has(target.name);
      box.addEventListener("change", () => {
        if (box.checked) this.chosen.add(target.name);
        else this.chosen.delete(target.name);
        this._save();
        this.onChange({ osc: this.values().osc });
      });
      const detail = target.bundle ? ` (bundle${target.delay_ms ? ` +${target.delay_ms} ms` : ""})` : "";
      this.list.append(element("label", { class: "check" }, [box, ` ${target.name}${detail}`]));
    }
  }

  _restore() {
    try {
      return JSON.parse(localStorage.getItem(this.storageKey) || "{}") || {};
    } catch {
      return {};
    }
  }

  _save() {
    try {
      localStorage.setItem(this.storageKey, JSON.stringify({ osc: [...this.chosen], name: this.name }));
    } catch {
      // storage may be disabled
    }
  }
}
