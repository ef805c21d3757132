// Beats, tempo and drum bands on the pages: the band colours (one per band, as in the CSS) and the tempo
// read-out with its beat indicator, shared by the live and monitor pages.

/** Colour of an onset of each band (kick-like, snare-like, hat-like); the CSS has the same as --band-*. */
export const BAND_COLORS = { low: "#ff4f6d", mid: "#3ecf8e", high: "#f2e863" };

/** The colour of an onset with `band` (undefined without beats: `fallback`). */
export function bandColor(band, fallback) {
  return BAND_COLORS[band] || fallback;
}

/** The BPM read-out and a dot that pulses on every beat (bigger on a downbeat). */
export class TempoDisplay {
  constructor(bpm, dot, sub) {
    this.bpm = bpm;
    this.dot = dot;
    this.sub = sub;
    this.reset();
  }

  reset() {
    this.beats = 0;
    this.bpm.textContent = "–";
    this.dot.dataset.beats = "0";
    this.dot.dataset.barPosition = "";
    this.sub.textContent = "no beat yet";
  }

  /** A `beat` event: its tempo, and one pulse. */
  beat(message) {
    this.beats += 1;
    this.bpm.textContent = message.bpm.toFixed(1);
    this.bpm.title = `confidence ${message.confidence.toFixed(2)}`;
    const position = Number.isInteger(message.bar_position) ? message.bar_position : null;
    this.dot.dataset.beats = String(this.beats);
    this.dot.dataset.barPosition = position === null ? "" : String(position);
    this.sub.textContent = position === null ? "beat · meter not known yet" : `beat ${position} of the bar`;
    const downbeat = position === 1;
    this.dot.animate(
      [{ opacity: 1, transform: `scale(${downbeat ? 1.6 : 1.25})` }, { opacity: 0.25, transform: "scale(1)" }],
      { duration: 180, easing: "ease-out" });
  }

  /** A `status` event's `tempo` (null before the first beat and with beats off). */
  status(tempo) {
    if (!tempo) return;
    this.bpm.textContent = tempo.bpm.toFixed(1);
    this.bpm.title = `confidence ${tempo.confidence.toFixed(2)}`;
  }
}
