// The detector settings panel: a control per setting (docs/protocol.md, "Detector settings"), a slider
// and an exact number box for numbers, remembered in localStorage, reporting changes debounced.

import { element } from "./ui.js";

// The methods offered before a server has described its own (`started`: `detector.methods`); the upload
// page, which gets no `started`, keeps these.
export const METHODS = [
  ["superflux", "SuperFlux", "Log-filtered spectral flux; the best all-rounder, robust to vibrato."],
  ["superflux_half", "SuperFlux, half-frame lag", "SuperFlux against the frame half a frame back: more of slow, bowed, sung and padded attacks; more false onsets on real pitched recordings."],
  ["complex", "Complex domain", "Phase and magnitude; finds soft and pitched attacks."],
  ["hfc", "High-frequency content", "Favours bright, percussive hits (hi-hats, snares, picks)."],
  ["energy", "Energy", "Rise of loudness; cheapest, for loud isolated hits."],
  ["neural", "Neural (learned)", "A small causal network trained on rendered music; 40 ms frames and 10 ms hops only."],
  ["fused", "Fused (learned + SuperFlux)", "The network's activation and SuperFlux summed frame by frame, each in its own unit; 40 ms frames and 10 ms hops only."],
];

const NUMBERS = [
  {
    key: "threshold", label: "Threshold", min: 0.05, max: 50, log: true, step: 0.01, digits: 2, unit: "",
    hint: "How far the onset strength must rise above its recent mean. Lower finds more, weaker onsets.",
  },
  {
    key: "min_interval_ms", label: "Minimum gap", min: 0, max: 500, step: 5, digits: 0, unit: "ms",
    hint: "An onset closer than this to the previous one is ignored (flams, double triggers).",
  },
  {
    key: "silence_db", label: "Silence gate", min: -140, max: 0, step: 1, digits: 0, unit: "dBFS",
    hint: "Nothing quieter than this level can trigger: raise it above the room's noise.",
  },
];

export const DEFAULTS = { method: "superflux", threshold: 1.0, min_interval_ms: 30, silence_db: -90 };
const SLIDER_STEPS = 1000;
const DEBOUNCE_MS = 120;

function toSlider(spec, value) {
  const clamped = Math.min(spec.max, Math.max(spec.min, value));
  if (!spec.log) return clamped;
  return Math.round((SLIDER_STEPS * Math.log(clamped / spec.min)) / Math.log(spec.max / spec.min));
}

function fromSlider(spec, position) {
  if (!spec.log) return Number(position);
  const value = spec.min * (spec.max / spec.min) ** (Number(position) / SLIDER_STEPS);
  return Number(value.toPrecision(value < 1 ? 2 : 3));
}

export class SettingsPanel {
  /**
   * @param {HTMLElement} container  where the controls go
   * @param {{storageKey: string, onChange?: (changed: object) => void}} options
   *   `onChange` gets only the keys whose value changed since the last report.
   */
  constructor(container, { storageKey, onChange = () => {} }) {
    this.storageKey = storageKey;
    this.onChange = onChange;
    this.methods = METHODS.map(([name, label, description]) => ({ name, label, description }));
    this.current = { ...DEFAULTS, ...this._restore() };
    this.reported = { ...this.current };
    this.controls = {};
    this._timer = null;
    this._build(container);
    this._render();
  }

  /** The settings the controls show. */
  values() {
    return { ...this.current };
  }

  /** Show the server's effective settings (a `started` or `configured` reply) without reporting them. */
  setEffective(settings) {
    let changed = false;
    for (const key of Object.keys(DEFAULTS)) {
      if (key in settings && settings[key] !== this.current[key] && settings[key] !== this.reported[key]) {
        this.current[key] = settings[key];
        changed = true;
      }
      if (key in settings) this.reported[key] = settings[key];
    }
    if (!changed) return; // the server confirmed what the controls show: leave them as the user holds them
    this._save();
    this._render();
  }

  /** Offer the server's methods (`detector.methods` of `started`): [{name, label, description}]. */
  setMethods(methods) {
    this.methods = methods;
    const select = this.controls.method.inputs[0];
    select.replaceChildren(...methods.map(({ name, label }) => element("option", { value: name, text: label })));
    this._render();
  }

  setDisabled(disabled) {
    for (const control of Object.values(this.controls)) {
      for (const input of control.inputs) input.disabled = disabled;
    }
  }

  _restore() {
    try {
      const saved = JSON.parse(localStorage.getItem(this.storageKey) || "{}");
      const valid = {};
      for (const key of Object.keys(DEFAULTS)) {
        if (typeof saved[key] === typeof DEFAULTS[key]) valid[key] = saved[key];
      }
      return valid;
    } catch {
      return {};
    }
  }

  _save() {
    try {
      localStorage.setItem(this.storageKey, JSON.stringify(this.current));
    } catch {
      // storage may be disabled; the settings still work for this page
    }
  }

  _build(container) {
    container.classList.add("settings");
    const select = element("select", { "data-setting": "method", "aria-label": "Detection method" });
    for (const { name, label } of this.methods) select.append(element("option", { value: name, text: label }));
    const methodHint = element("p", { class: "hint" });
    select.addEventListener("change", () => this._set("method", select.value));
    container.append(element("label", { class: "field" }, [element("span", { text: "Method" }), select]), methodHint);
    this.controls.method = { inputs: [select], hint: methodHint };

    for (const spec of NUMBERS) {
      const slider = element("input", {
        type: "range",
        min: spec.log ? 0 : spec.min,
        max: spec.log ? SLIDER_STEPS : spec.max,
        step: spec.log ? 1 : spec.step,
        "data-setting": spec.key,
        "aria-label": spec.label,
      });
      const box = element("input", {
        type: "number", min: spec.min, max: spec.max, step: spec.step, class: "num",
        style: "width: 84px; padding: 2px 6px;", "aria-label": `${spec.label} value`,
      });
      slider.addEventListener("input", () => this._set(spec.key, fromSlider(spec, slider.value), slider));
      const error = element("p", { class: "field-error", role: "alert", "data-error-for": spec.key });
      error.hidden = true;
      box.addEventListener("change", () => {
        const value = Number(box.value);
        if (box.value === "" || !Number.isFinite(value) || value < spec.min || value > spec.max) {
          // Out of range: say so and keep the running value, instead of quietly sending a clamped one.
          const shown = `${spec.min}${spec.unit ? ` ${spec.unit}` : ""} and ${spec.max}${spec.unit ? ` ${spec.unit}` : ""}`;
          error.textContent = `${spec.label} must be between ${shown}; still ${this.current[spec.key].toFixed(spec.digits)}.`;
          error.hidden = false;
          box.setAttribute("aria-invalid", "true");
          return;
        }
        this._clearError(spec.key);
        this._set(spec.key, value);
      });
      slider.addEventListener("input", () => this._clearError(spec.key));
      const title = element("span", {}, [
        element("span", { text: spec.label }),
        element("span", {}, [box, spec.unit ? ` ${spec.unit}` : ""]),
      ]);
      container.append(element("label", { class: "field" }, [title, slider]), error, element("p", { class: "hint", text: spec.hint }));
      this.controls[spec.key] = { inputs: [slider, box], spec, error };
    }
  }

  /** Show the current values; `source` (the control being moved) is left as the user put it. */
  _render(source = null) {
    const method = this.controls.method;
    method.inputs[0].value = this.current.method;
    const described = this.methods.find(({ name }) => name === this.current.method);
    method.hint.textContent = described ? described.description : "";
    for (const spec of NUMBERS) {
      const [slider, box] = this.controls[spec.key].inputs;
      const value = this.current[spec.key];
      if (slider !== source) slider.value = String(toSlider(spec, value));
      if (document.activeElement !== box) box.value = value.toFixed(spec.digits);
    }
  }

  _clearError(key) {
    const control = this.controls[key];
    control.error.hidden = true;
    control.inputs[1].removeAttribute("aria-invalid");
  }

  _set(key, value, source = null) {
    this.current[key] = value;
    this._save();
    this._render(source);
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._report(), DEBOUNCE_MS);
  }

  _report() {
    const changed = {};
    for (const [key, value] of Object.entries(this.current)) {
      if (this.reported[key] !== value) changed[key] = value;
    }
    if (Object.keys(changed).length === 0) return;
    this.reported = { ...this.current };
    this.onChange(changed);
  }
}
