// The live page's scrolling plot on a <canvas>: waveform above, onset strength (with the threshold it
// must clear) below, a marker through both at every onset. The right edge is "now".

import { drawOnsetMarker } from "./marks.js";
import { bandColor } from "./rhythm.js";

const COLORS = {
  grid: "#1c2430",
  label: "#7d8898",
  wave: "#4cc3ff",
  odf: "#b28cff",
  threshold: "#8d98a8",
  onset: "#ffb020",
  divider: "#232b38",
};
const WAVE_SHARE = 0.56; // of the plot height
const AXIS_PX = 20;
const FRESH_MS = 350; // an onset this recent is drawn brighter

// The baselines of the server's peak picker (`detector.baseline`) over values[start..stop) of [t, v] pairs.
function mean(values, start, stop) {
  let sum = 0;
  for (let i = start; i < stop; i += 1) sum += values[i][1];
  return sum / (stop - start);
}

function median(values, start, stop) {
  const sorted = values.slice(start, stop).map((pair) => pair[1]).sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : 0.5 * (sorted[middle - 1] + sorted[middle]);
}

function niceStep(windowS) {
  return windowS <= 5 ? 0.5 : windowS <= 12 ? 1 : 2;
}

export class Scope {
  constructor(canvas, timeline) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.timeline = timeline;
    this.windowS = 8;
    this.threshold = 1;
    // The server's `detector` description (`started`, `configured`): `mean_factor`, `pre_avg_ms`.
    this.detector = null;
    this.hopS = 0.01;
    this.waveGain = 1;
    this.odfTop = 2;
    this.running = false;
    this._frame = () => {
      if (!this.running) return;
      this.draw();
      requestAnimationFrame(this._frame);
    };
  }

  start() {
    if (this.running) return;
    this.running = true;
    requestAnimationFrame(this._frame);
  }

  stop() {
    this.running = false;
    this.draw();
  }

  _fit() {
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const height = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    return { width, height, dpr };
  }

  draw() {
    const { width, height, dpr } = this._fit();
    const ctx = this.ctx;
    const tl = this.timeline;
    ctx.clearRect(0, 0, width, height);
    if (!tl) {
      ctx.fillStyle = COLORS.label;
      ctx.font = `${14 * dpr}px system-ui, sans-serif`;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("Press “Start microphone”: the waveform, onset strength and onsets scroll here.", width / 2, height / 2);
      ctx.textAlign = "start";
      return;
    }
    const plotH = height - AXIS_PX * dpr;
    const waveH = Math.round(plotH * WAVE_SHARE);
    const odfTop = waveH + 1;
    const odfH = plotH - odfTop;
    const t1 = tl.now;
    const t0 = t1 - this.windowS;
    const x = (t) => ((t - t0) / this.windowS) * width;

    this._grid(ctx, t0, t1, x, width, height, plotH, waveH, dpr);
    this._wave(ctx, t0, width, waveH);
    this._odf(ctx, t0, x, odfTop, odfH, dpr);
    this._onsets(ctx, t0, x, plotH, dpr);

    ctx.fillStyle = COLORS.label;
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    ctx.fillText(`waveform ×${this.waveGain.toFixed(1)}`, 8 * dpr, 6 * dpr);
    ctx.fillText("onset strength (log scale)", 8 * dpr, odfTop + 6 * dpr);
  }

  _grid(ctx, t0, t1, x, width, height, plotH, waveH, dpr) {
    const step = niceStep(this.windowS);
    ctx.fillStyle = COLORS.grid;
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = "middle";
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      const px = Math.round(x(t));
      ctx.fillStyle = COLORS.grid;
      ctx.fillRect(px, 0, dpr, plotH);
      if (t >= 0) {
        ctx.fillStyle = COLORS.label;
        ctx.fillText(`${Number(t.toFixed(1))} s`, px + 4 * dpr, plotH + (AXIS_PX * dpr) / 2);
      }
    }
    ctx.fillStyle = COLORS.divider;
    ctx.fillRect(0, waveH, width, dpr);
    ctx.fillRect(0, waveH / 2, width, 1);
  }

  _wave(ctx, t0, width, waveH) {
    const tl = this.timeline;
    const perPx = this.windowS / width;
    const mid = waveH / 2;
    let peak = 0;
    ctx.fillStyle = COLORS.wave;
    for (let px = 0; px < width; px += 1) {
      const range = tl.range(t0 + px * perPx, t0 + (px + 1) * perPx);
      if (!range) continue;
      const [lo, hi] = range;
      peak = Math.max(peak, -lo, hi);
      const top = mid - hi * this.waveGain * mid;
      const bottom = mid - lo * this.waveGain * mid;
      ctx.fillRect(px, top, 1, Math.max(1, bottom - top));
    }
    // Display gain follows the loudest visible sample: quiet inputs stay readable, loud ones fit.
    const wanted = Math.min(50, 0.9 / Math.max(peak, 0.018));
    this.waveGain += (wanted - this.waveGain) * (wanted < this.waveGain ? 0.5 : 0.05);
  }

  _odf(ctx, t0, x, top, height, dpr) {
    const values = this.timeline.odf;
    let first = values.length;
    const preAvgS = this.detector ? this.detector.pre_avg_ms / 1000 : 0;
    while (first > 0 && values[first - 1][0] >= t0 - preAvgS) first -= 1;
    if (first >= values.length) return;
    let visibleMax = this.threshold * 1.5;
    for (let i = first; i < values.length; i += 1) visibleMax = Math.max(visibleMax, values[i][1]);
    this.odfTop += (visibleMax * 1.1 - this.odfTop) * (visibleMax * 1.1 > this.odfTop ? 0.5 : 0.03);
    // Logarithmic: a loud hit must not flatten the quiet ones and the threshold line near zero.
    const scale = (height - 4 * dpr) / Math.log1p(this.odfTop);
    const y = (v) => top + height - Math.log1p(Math.max(0, Math.min(v, this.odfTop))) * scale;

    ctx.lineWidth = 1.5 * dpr;
    ctx.strokeStyle = COLORS.odf;
    ctx.beginPath();
    for (let i = first; i < values.length; i += 1) {
      const [t, v] = values[i];
      if (i === first) ctx.moveTo(x(t), y(v));
      else ctx.lineTo(x(t), y(v));
    }
    ctx.stroke();

    // What a peak must clear: the baseline (mean or median) of the last pre_avg_ms, scaled, plus the threshold.
    if (!this.detector) return;
    const window = Math.max(1, Math.round(preAvgS / this.hopS)) + 1;
    const factor = this.detector.mean_factor;
    const level = this.detector.baseline === "median" ? median : mean;
    ctx.setLineDash([4 * dpr, 4 * dpr]);
    ctx.lineWidth = dpr;
    ctx.strokeStyle = COLORS.threshold;
    ctx.beginPath();
    let started = false;
    for (let i = first + window - 1; i < values.length; i += 1) {
      const px = x(values[i][0]);
      const py = y(factor * level(values, i - window + 1, i + 1) + this.threshold);
      if (!started) ctx.moveTo(px, py);
      else ctx.lineTo(px, py);
      started = true;
    }
    ctx.stroke();
    ctx.setLineDash([]);
  }

  _onsets(ctx, t0, x, plotH, dpr) {
    const now = performance.now();
    ctx.font = `${10 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    let labelEnd = -Infinity; // right end of the last strength label drawn: later ones must not overlap
    for (const onset of this.timeline.onsets) {
      if (onset.time < t0) continue;
      const px = x(onset.time);
      const fresh = now - onset.arrivedMs < FRESH_MS;
      ctx.globalAlpha = fresh ? 1 : 0.75;
      ctx.fillStyle = bandColor(onset.band, COLORS.onset); // by drum band; amber without beats
      drawOnsetMarker(ctx, px, plotH, dpr, fresh);
      const label = onset.strength.toFixed(1);
      if (px + 4 * dpr > labelEnd) {
        ctx.fillText(label, px + 4 * dpr, 9 * dpr);
        labelEnd = px + 4 * dpr + ctx.measureText(label).width + 4 * dpr;
      }
    }
    ctx.globalAlpha = 1;
  }
}
