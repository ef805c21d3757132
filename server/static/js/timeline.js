// The live page's recent past on the client's time line (seconds since the microphone opened):
// the waveform as min/max per 2.5 ms bin, the onset strength (ODF) values, the onsets.

export const BINS_PER_S = 400;
const KEEP_S = 40;

export class Timeline {
  constructor(sampleRate) {
    this.sampleRate = sampleRate;
    this.framesPerBin = sampleRate / BINS_PER_S;
    this.capacity = KEEP_S * BINS_PER_S;
    this.min = new Float32Array(this.capacity);
    this.max = new Float32Array(this.capacity);
    this.bins = 0; // bins completed so far (absolute)
    this.binMin = Infinity;
    this.binMax = -Infinity;
    this.frames = 0;
    this.peak = 0; // largest |sample| since the last takePeak()
    this.odf = []; // [time s, value], oldest first
    this.onsets = []; // {time, strength, band, arrivedMs}
  }

  get now() {
    return this.frames / this.sampleRate;
  }

  addAudio(samples) {
    let { binMin, binMax } = this;
    let nextEdge = Math.round((this.bins + 1) * this.framesPerBin);
    for (let i = 0; i < samples.length; i += 1) {
      const v = samples[i];
      if (v < binMin) binMin = v;
      if (v > binMax) binMax = v;
      this.frames += 1;
      if (this.frames >= nextEdge) {
        const slot = this.bins % this.capacity;
        this.min[slot] = binMin;
        this.max[slot] = binMax;
        this.bins += 1;
        nextEdge = Math.round((this.bins + 1) * this.framesPerBin);
        if (-binMin > this.peak) this.peak = -binMin;
        if (binMax > this.peak) this.peak = binMax;
        binMin = Infinity;
        binMax = -Infinity;
      }
    }
    this.binMin = binMin;
    this.binMax = binMax;
  }

  /** min/max of the bins covering [t0, t1), or null when none is kept. */
  range(t0, t1) {
    const first = Math.max(Math.floor(t0 * BINS_PER_S), this.bins - this.capacity, 0);
    const last = Math.min(Math.ceil(t1 * BINS_PER_S), this.bins);
    if (last <= first) return null;
    let lo = Infinity;
    let hi = -Infinity;
    for (let b = first; b < last; b += 1) {
      const slot = b % this.capacity;
      if (this.min[slot] < lo) lo = this.min[slot];
      if (this.max[slot] > hi) hi = this.max[slot];
    }
    return [lo, hi];
  }

  addOdf(startS, hopS, values) {
    for (let i = 0; i < values.length; i += 1) this.odf.push([startS + i * hopS, values[i]]);
    this._forget();
  }

  /** An onset at `time` (s, this time line) with its `strength` and drum `band` (undefined with beats off). */
  addOnset(time, strength, band) {
    this.onsets.push({ time, strength, band, arrivedMs: performance.now() });
    this._forget();
  }

  /** Peak level since the last call, dBFS (-Infinity for digital silence). */
  takePeakDb() {
    const peak = this.peak;
    this.peak = 0;
    return 20 * Math.log10(peak);
  }

  /** Onsets per minute over the last minute (or since `sinceS`, the stream's start, if later). */
  onsetsPerMinute(sinceS) {
    const now = this.now;
    const from = Math.max(now - 60, sinceS);
    const span = now - from;
    if (span < 3) return null;
    let count = 0;
    for (let i = this.onsets.length - 1; i >= 0 && this.onsets[i].time >= from; i -= 1) count += 1;
    return (count * 60) / span;
  }

  _forget() {
    const horizon = this.now - KEEP_S;
    let drop = 0;
    while (drop < this.odf.length && this.odf[drop][0] < horizon) drop += 1;
    if (drop > 256) this.odf.splice(0, drop);
    if (this.onsets.length > 4000) this.onsets.splice(0, this.onsets.length - 2000);
  }
}
