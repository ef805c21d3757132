// The upload page's waveform: a zoomable view of a whole file with its onsets and the playhead, and an
// overview strip of the whole file showing where the view is. Drawn on <canvas> from min/max summaries.

import { drawOnsetMarker } from "./marks.js";

const COLORS = {
  wave: "#4cc3ff",
  waveFaded: "#24617f",
  onset: "#ffb020",
  playhead: "#ffffff",
  grid: "#1c2430",
  label: "#7d8898",
  view: "rgba(255, 255, 255, 0.09)",
  viewEdge: "rgba(255, 255, 255, 0.35)",
};
const BIN = 64; // samples per summary bin
const AXIS_PX = 18;
const MIN_VIEW_S = 0.05;

/** Mono min/max per BIN samples of an AudioBuffer (channels averaged), and the buffer for close zoom. */
export function summarise(buffer) {
  const channels = [];
  for (let c = 0; c < buffer.numberOfChannels; c += 1) channels.push(buffer.getChannelData(c));
  const n = buffer.length;
  const bins = Math.ceil(n / BIN);
  const min = new Float32Array(bins);
  const max = new Float32Array(bins);
  const scale = 1 / channels.length;
  for (let b = 0; b < bins; b += 1) {
    let lo = Infinity;
    let hi = -Infinity;
    const end = Math.min(n, (b + 1) * BIN);
    for (let i = b * BIN; i < end; i += 1) {
      let v = 0;
      for (const data of channels) v += data[i];
      v *= scale;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    min[b] = lo;
    max[b] = hi;
  }
  return { min, max, channels, sampleRate: buffer.sampleRate, length: n };
}

function fit(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * dpr));
  const height = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  return { width, height, dpr };
}

function gridStep(spanS) {
  const steps = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600];
  return steps.find((s) => spanS / s <= 12) || 1200;
}

function timeLabel(t, step) {
  if (t >= 60) {
    const m = Math.floor(t / 60);
    const s = t - m * 60;
    return `${m}:${s.toFixed(step < 1 ? 1 : 0).padStart(step < 1 ? 4 : 2, "0")}`;
  }
  return `${Number(t.toFixed(step < 0.1 ? 2 : step < 1 ? 1 : 0))} s`;
}

export class WaveformView {
  /** `onSeek(t)` is called when the user clicks a point of the file. */
  constructor(main, overview, { onSeek }) {
    this.main = main;
    this.overview = overview;
    this.onSeek = onSeek;
    this.summary = null;
    this.duration = 0;
    this.onsets = [];
    this.t0 = 0;
    this.t1 = 1;
    this.playhead = null;
    this.current = -1; // index of the onset last passed by the playhead
    this.onViewChange = () => {};
    this._overviewCache = null;
    this._bind();
  }

  /** Show a file of `duration` s; `summary` from summarise(), or null to show onsets only. */
  load(duration, onsets, summary) {
    this.duration = Math.max(duration, MIN_VIEW_S);
    this.onsets = onsets;
    this.summary = summary;
    this.t0 = 0;
    this.t1 = this.duration;
    this.playhead = null;
    this.draw();
  }

  get zoom() {
    return this.duration / (this.t1 - this.t0);
  }

  get maxZoom() {
    return Math.max(1, this.duration / MIN_VIEW_S);
  }

  /** Show `span` seconds around time `center`, kept inside the file. */
  setView(center, span) {
    const length = Math.min(this.duration, Math.max(MIN_VIEW_S, span));
    let t0 = center - length / 2;
    t0 = Math.min(Math.max(0, t0), this.duration - length);
    this.t0 = t0;
    this.t1 = t0 + length;
    this.draw();
    this.onViewChange();
  }

  zoomTo(zoom, around = (this.t0 + this.t1) / 2) {
    const span = this.duration / Math.min(this.maxZoom, Math.max(1, zoom));
    const fraction = (around - this.t0) / (this.t1 - this.t0);
    const t0 = around - fraction * span;
    this.setView(t0 + span / 2, span);
  }

  /** Move the playhead; page the view to follow it while playing. */
  setPlayhead(t, follow) {
    this.playhead = t;
    if (t !== null && follow && (t > this.t1 || t < this.t0)) {
      const span = this.t1 - this.t0;
      this.setView(t + span * 0.45, span);
    }
    this.draw();
  }

  _bind() {
    const timeAt = (canvas, event, t0, t1) => {
      const rect = canvas.getBoundingClientRect();
      return t0 + ((event.clientX - rect.left) / rect.width) * (t1 - t0);
    };
    this.main.addEventListener("click", (event) => {
      if (!this.duration) return;
      this.onSeek(Math.min(this.duration, Math.max(0, timeAt(this.main, event, this.t0, this.t1))));
    });
    this.main.addEventListener("wheel", (event) => {
      if (!this.duration) return;
      if (event.ctrlKey || event.metaKey) {
        event.preventDefault();
        const around = timeAt(this.main, event, this.t0, this.t1);
        this.zoomTo(this.zoom * Math.exp(-event.deltaY * 0.004), around);
      } else if (Math.abs(event.deltaX) > Math.abs(event.deltaY) || event.shiftKey) {
        event.preventDefault();
        const span = this.t1 - this.t0;
        const delta = (event.shiftKey ? event.deltaY : event.deltaX) / this.main.clientWidth;
        this.setView((this.t0 + this.t1) / 2 + delta * span, span);
      }
    }, { passive: false });
    let dragging = false;
    const drag = (event) => {
      const span = this.t1 - this.t0;
      this.setView(timeAt(this.overview, event, 0, this.duration), span);
    };
    this.overview.addEventListener("pointerdown", (event) => {
      if (!this.duration) return;
      dragging = true;
      this.overview.setPointerCapture(event.pointerId);
      drag(event);
    });
    this.overview.addEventListener("pointermove", (event) => {
      if (dragging) drag(event);
    });
    this.overview.addEventListener("pointerup", () => {
      dragging = false;
    });
  }

  draw() {
    this._drawMain();
    this._drawOverview();
  }

  _drawMain() {
    const { width, height, dpr } = fit(this.main);
    const ctx = this.main.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    if (!this.duration) return;
    const plotH = height - AXIS_PX * dpr;
    const { t0, t1 } = this;
    const x = (t) => ((t - t0) / (t1 - t0)) * width;

    const step = gridStep(t1 - t0);
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = "middle";
    for (let t = Math.ceil(t0 / step) * step; t <= t1 + 1e-9; t += step) {
      const px = Math.round(x(t));
      ctx.fillStyle = COLORS.grid;
      ctx.fillRect(px, 0, dpr, plotH);
      ctx.fillStyle = COLORS.label;
      ctx.fillText(timeLabel(t, step), px + 4 * dpr, plotH + (AXIS_PX * dpr) / 2);
    }
    ctx.fillStyle = COLORS.grid;
    ctx.fillRect(0, Math.round(plotH / 2), width, 1);

    if (this.summary) this._wave(ctx, width, plotH, t0, t1, this.playhead);

    ctx.font = `${10 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    const dense = this.onsets.filter((o) => o.time >= t0 && o.time <= t1).length > width / (30 * dpr);
    this.onsets.forEach((onset, i) => {
      if (onset.time < t0 || onset.time > t1) return;
      const px = x(onset.time);
      const isCurrent = i === this.current;
      ctx.globalAlpha = isCurrent ? 1 : 0.8;
      ctx.fillStyle = COLORS.onset;
      drawOnsetMarker(ctx, px, plotH, dpr, isCurrent);
      if (!dense) ctx.fillText(String(i + 1), px + 4 * dpr, 3 * dpr);
    });
    ctx.globalAlpha = 1;

    if (this.playhead !== null && this.playhead >= t0 && this.playhead <= t1) {
      ctx.fillStyle = COLORS.playhead;
      ctx.fillRect(Math.round(x(this.playhead)) - dpr / 2, 0, 1.5 * dpr, plotH);
    }
  }

  _wave(ctx, width, height, t0, t1, playhead) {
    const s = this.summary;
    const mid = height / 2;
    const spp = ((t1 - t0) * s.sampleRate) / width; // samples per pixel
    const scale = mid * 0.95;
    for (let px = 0; px < width; px += 1) {
      const a = Math.max(0, Math.floor(t0 * s.sampleRate + px * spp));
      const b = Math.min(s.length, Math.max(a + 1, Math.floor(t0 * s.sampleRate + (px + 1) * spp)));
      if (a >= s.length) break;
      let lo = Infinity;
      let hi = -Infinity;
      if (spp >= BIN) {
        for (let bin = Math.floor(a / BIN); bin < Math.ceil(b / BIN); bin += 1) {
          if (s.min[bin] < lo) lo = s.min[bin];
          if (s.max[bin] > hi) hi = s.max[bin];
        }
      } else {
        for (let i = a; i < b; i += 1) {
          let v = 0;
          for (const data of s.channels) v += data[i];
          v /= s.channels.length;
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
      }
      const played = playhead !== null && t0 + ((px + 0.5) / width) * (t1 - t0) <= playhead;
      ctx.fillStyle = played ? COLORS.waveFaded : COLORS.wave;
      const top = mid - hi * scale;
      ctx.fillRect(px, top, 1, Math.max(1, mid - lo * scale - top));
    }
  }

  _drawOverview() {
    const { width, height, dpr } = fit(this.overview);
    const ctx = this.overview.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    if (!this.duration) return;
    const x = (t) => (t / this.duration) * width;
    if (this.summary) {
      // The whole file's waveform only changes with the canvas size: draw it once, then copy it.
      const cache = this._overviewCache;
      if (!cache || cache.width !== width || cache.height !== height || cache.summary !== this.summary) {
        const canvas = document.createElement("canvas");
        canvas.width = width;
        canvas.height = height;
        this._wave(canvas.getContext("2d"), width, height, 0, this.duration, null);
        this._overviewCache = { width, height, summary: this.summary, canvas };
      }
      ctx.drawImage(this._overviewCache.canvas, 0, 0);
    }
    ctx.fillStyle = COLORS.onset;
    ctx.globalAlpha = 0.7;
    for (const onset of this.onsets) ctx.fillRect(Math.round(x(onset.time)), height - 6 * dpr, dpr, 6 * dpr);
    ctx.globalAlpha = 1;
    if (this.zoom > 1.0001) {
      ctx.fillStyle = COLORS.view;
      ctx.fillRect(x(this.t0), 0, x(this.t1) - x(this.t0), height);
      ctx.strokeStyle = COLORS.viewEdge;
      ctx.lineWidth = dpr;
      ctx.strokeRect(x(this.t0) + 0.5, 0.5, x(this.t1) - x(this.t0) - 1, height - 1);
    }
    if (this.playhead !== null) {
      ctx.fillStyle = COLORS.playhead;
      ctx.fillRect(Math.round(x(this.playhead)), 0, dpr, height);
    }
  }
}
