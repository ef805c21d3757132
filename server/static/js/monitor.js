// The monitor page: pick a live stream (GET /api/v3/streams, refreshed) and flash on each of its onsets
// (/api/v3/streams/{id}/events), a band's own light on each onset of that band, the tempo with a beat
// indicator, and the event log. Made for a second screen next to the lighting desk.

import { Backoff, PATHS, accessRefusal, describeClose, fetchJson, wsUrl } from "./api.js";
import { TokenField, accessProblem } from "./auth.js";
import { TempoDisplay } from "./rhythm.js";
import { $, logLine, setBanner, setPill } from "./ui.js";

const REFRESH_MS = 2000;
const REFRESH_IDLE_MS = 700; // while no stream is watched, so a new one is picked up quickly
const STRENGTH_MEMORY = 16; // onsets whose strength sets the scale of the flash's brightness

const ui = {
  banner: $("#banner"),
  pill: $("#state"),
  select: $("#stream"),
  follow: $("#follow"),
  color: $("#color"),
  fade: $("#fade"),
  fadeValue: $("#fade-value"),
  flash: $("#flash"),
  light: $("#light"),
  count: $("#count"),
  flashLabel: $("#flash-label"),
  fullscreen: $("#fullscreen"),
  rate: $("#stat-rate"),
  strength: $("#stat-strength"),
  last: $("#stat-last"),
  time: $("#stat-time"),
  format: $("#stat-format"),
  delay: $("#stat-delay"),
  lag: $("#stat-lag"),
  lagSub: $("#stat-lag-sub"),
  log: $("#log"),
  bands: { low: $("#band-low"), mid: $("#band-mid"), high: $("#band-high") },
};
const tempo = new TempoDisplay($("#stat-bpm"), $("#beat"), $("#stat-beat"));
const bandAnimations = {};

/** One subscription to one stream's events, reconnecting while the stream is still listed. */
class Watch {
  constructor(streamId) {
    this.streamId = streamId;
    this.ws = null;
    this.ended = false;
    this.closed = false;
    this.refused = false; // the access checks refused this subscription
    this.backoff = new Backoff();
    this.retryTimer = null;
    this.onsets = 0;
    this.times = []; // stream times of recent onsets
    this.strengths = [];
    this.streamTime = 0;
    this._open();
  }

  _open() {
    const ws = new WebSocket(wsUrl(PATHS.events(this.streamId)));
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") this._message(JSON.parse(event.data));
    };
    ws.onclose = async (event) => {
      if (this.closed || this.ended) return;
      const listed = streams.some((s) => s.stream_id === this.streamId);
      if (!listed && opened) {
        this._end("The stream is no longer live.");
        return;
      }
      const refusal = opened ? null : await accessRefusal(PATHS.events(this.streamId));
      if (this.closed) return;
      if (refusal) {
        this.refused = true; // retried once the token changes
        setPill(ui.pill, "error", "Access refused");
        setBanner(ui.banner, "error", `Cannot watch the stream: ${accessProblem(refusal)}`);
        tokenField.demand();
        return;
      }
      const delayS = this.backoff.next();
      setPill(ui.pill, "connecting", "Reconnecting");
      setBanner(ui.banner, "warn", `Lost the stream's events (${describeClose(event.code, event.reason)}); retrying in ${delayS.toFixed(1)} s…`);
      this.retryTimer = setTimeout(() => {
        if (!this.closed) this._open();
      }, delayS * 1000);
    };
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
    }
  }

  _end(text) {
    this.ended = true;
    setPill(ui.pill, "idle", "Ended");
    logLine(ui.log, { kind: "ended", time: this.streamTime.toFixed(3), text });
    if (ui.follow.checked) refresh();
  }

  _message(message) {
    switch (message.type) {
      case "subscribed": {
        const s = message.stream;
        this.backoff.reset();
        setBanner(ui.banner, "", "");
        setPill(ui.pill, "live", "Live");
        this.streamTime = s.received_s || 0;
        // The stream's own count, not this page's: onsets before this page subscribed count too.
        this.onsets = s.onsets || 0;
        ui.count.textContent = String(this.onsets);
        ui.format.textContent = `${(s.sample_rate / 1000).toFixed(1)} kHz · ${s.transport} · ${s.settings.method}`;
        logLine(ui.log, {
          kind: "watching", cls: "info", time: this.streamTime.toFixed(3),
          text: `stream ${s.stream_id} (${s.transport}, threshold ${s.settings.threshold}, ${s.onsets} onsets so far)`,
        });
        break;
      }
      case "onset":
        this._onset(message);
        break;
      case "beat":
        tempo.beat(message);
        break;
      case "status":
        this.streamTime = message.received_s;
        tempo.status(message.tempo);
        if (Number.isInteger(message.onsets) && message.onsets !== this.onsets) {
          this.onsets = message.onsets; // the stream's count is the truth (events dropped on overflow too)
          ui.count.textContent = String(this.onsets);
        }
        ui.time.textContent = `${message.received_s.toFixed(1)} s`;
        ui.lag.textContent = `${Math.round(message.lag_s * 1000)} ms`;
        ui.lagSub.textContent = message.dropped_s > 0 ? `${message.dropped_s.toFixed(1)} s of audio dropped` : "audio waiting for analysis";
        break;
      case "warning":
        logLine(ui.log, { kind: "warning", time: this.streamTime.toFixed(3), text: message.message });
        break;
      case "overflow":
        logLine(ui.log, {
          kind: "overflow", time: this.streamTime.toFixed(3),
          text: `${message.dropped} events were dropped: this screen did not keep up`,
        });
        break;
      case "error":
        logLine(ui.log, { kind: "error", time: this.streamTime.toFixed(3), text: `${message.code}: ${message.message}` });
        break;
      case "ended":
        this._end(`stream ended (${message.reason}): ${message.onsets} onsets in ${message.duration.toFixed(1)} s`);
        break;
      default:
        break;
    }
  }

  _onset(message) {
    this.onsets += 1;
    this.times.push(message.time);
    while (this.times.length && this.times[0] < message.time - 60) this.times.shift();
    this.strengths.push(message.strength);
    if (this.strengths.length > STRENGTH_MEMORY) this.strengths.shift();
    const loudest = Math.max(...this.strengths);
    const intensity = 0.45 + 0.55 * Math.min(1, message.strength / loudest);
    flash(intensity);
    ui.flash.dataset.flashes = String(Number(ui.flash.dataset.flashes) + 1);
    if (message.band) flashBand(message.band, intensity);
    ui.count.textContent = String(this.onsets);
    ui.strength.textContent = message.strength.toFixed(2);
    ui.last.textContent = `at ${message.time.toFixed(3)} s stream time`;
    const span = Math.min(60, message.time - (this.times[0] ?? message.time));
    ui.rate.textContent = span >= 3 ? ((this.times.length - 1) * 60 / span).toFixed(0) : "–";
    if (Number.isFinite(message.wall_time)) {
      const delayMs = Date.now() - message.wall_time * 1000;
      ui.delay.textContent = delayMs >= 0 && delayMs < 10000 ? `${Math.round(delayMs)} ms` : "–";
    }
    logLine(ui.log, {
      kind: "onset", time: message.time.toFixed(3),
      text: `strength ${message.strength.toFixed(2)}${message.band ? ` · ${message.band}` : ""}`,
      data: { time: message.time, strength: message.strength, ...(message.band ? { band: message.band } : {}) },
    });
  }
}

let streams = [];
let watch = null;
const tokenField = new TokenField($("#token-form"), () => {
  setBanner(ui.banner, "info", "Access token saved for this tab.");
  if (watch && watch.refused) choose(watch.streamId);
  refresh();
});
let requested = new URLSearchParams(window.location.search).get("stream");
let animation = null;

function flash(intensity) {
  if (animation) animation.cancel();
  animation = ui.light.animate([{ opacity: intensity }, { opacity: 0 }], {
    duration: Number(ui.fade.value),
    easing: "cubic-bezier(0.1, 0.7, 0.3, 1)",
  });
}

/** The band's own light: one flash per onset of that band (kick, snare, hat). */
function flashBand(band, intensity) {
  const light = ui.bands[band];
  if (!light) return;
  if (bandAnimations[band]) bandAnimations[band].cancel();
  bandAnimations[band] = light.querySelector(".glow").animate([{ opacity: intensity }, { opacity: 0 }], {
    duration: Number(ui.fade.value),
    easing: "cubic-bezier(0.1, 0.7, 0.3, 1)",
  });
  light.dataset.flashes = String(Number(light.dataset.flashes) + 1);
}

function label(stream) {
  const khz = (stream.sample_rate / 1000).toFixed(1);
  const started = new Date(stream.started_at * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return `${stream.stream_id} · ${stream.transport} · ${khz} kHz · since ${started} · ${stream.onsets} onsets`;
}

function renderOptions() {
  const current = watch ? watch.streamId : "";
  const ids = streams.map((s) => s.stream_id);
  const shown = [...ui.select.options].map((o) => o.value).filter(Boolean);
  const ended = current && !ids.includes(current);
  if (ids.join() !== shown.join() || ended) {
    ui.select.replaceChildren(new Option(streams.length ? "Choose a stream…" : "Waiting for a live stream…", ""));
    for (const s of streams) ui.select.append(new Option(label(s), s.stream_id));
    if (ended) ui.select.append(new Option(`${current} (ended)`, current));
  } else {
    for (const s of streams) {
      const option = [...ui.select.options].find((o) => o.value === s.stream_id);
      if (option) option.textContent = label(s);
    }
  }
  ui.select.value = current;
}

async function refresh() {
  try {
    const body = await fetchJson(PATHS.streams, { cache: "no-store" });
    streams = body.streams.slice().sort((a, b) => b.started_at - a.started_at);
    if (ui.banner.dataset.level === "error") setBanner(ui.banner, "", "");
  } catch (err) {
    const problem = accessProblem(err);
    if (problem) {
      setPill(ui.pill, "error", "Access refused");
      if (ui.banner.dataset.level !== "error") tokenField.demand();
      setBanner(ui.banner, "error", `Cannot list the streams: ${problem}`);
    } else {
      setBanner(ui.banner, "error", `Cannot list the streams: ${err.message}. Retrying…`);
    }
    return;
  }
  let target = null;
  if (requested && streams.some((s) => s.stream_id === requested)) {
    target = requested;
    requested = null;
    ui.follow.checked = false;
  } else if (ui.follow.checked && streams.length) {
    target = streams[0].stream_id;
  }
  if (target && (!watch || watch.streamId !== target)) choose(target);
  renderOptions();
  if (!watch && !streams.length) setPill(ui.pill, "idle", "No stream");
}

function choose(streamId) {
  if (watch) watch.close();
  watch = null;
  ui.count.textContent = "0";
  tempo.reset();
  for (const el of [ui.rate, ui.strength, ui.time, ui.delay, ui.lag]) el.textContent = "–";
  ui.last.textContent = "–";
  if (!streamId) {
    setPill(ui.pill, "idle", "No stream");
    return;
  }
  setPill(ui.pill, "connecting", "Connecting");
  watch = new Watch(streamId);
  const url = new URL(window.location.href);
  url.searchParams.set("stream", streamId);
  history.replaceState(null, "", url);
}

function toggleFullscreen() {
  if (document.fullscreenElement) document.exitFullscreen();
  else ui.flash.requestFullscreen().catch(() => {});
}

ui.select.addEventListener("change", () => {
  ui.follow.checked = false;
  choose(ui.select.value);
  renderOptions();
});
ui.follow.addEventListener("change", () => {
  if (ui.follow.checked) refresh();
});
ui.color.addEventListener("input", () => ui.flash.style.setProperty("--flash-color", ui.color.value));
ui.fade.addEventListener("input", () => {
  ui.fadeValue.textContent = `${ui.fade.value} ms`;
});
ui.fullscreen.addEventListener("click", toggleFullscreen);
ui.flash.addEventListener("dblclick", toggleFullscreen);
document.addEventListener("keydown", (event) => {
  if (event.target.closest("input, select, textarea, button")) return;
  if (event.key === "f" || event.key === "F") toggleFullscreen();
  if (event.key === " ") {
    event.preventDefault();
    flash(1);
  }
});

async function keepRefreshing() {
  await refresh();
  setTimeout(keepRefreshing, watch && !watch.ended ? REFRESH_MS : REFRESH_IDLE_MS);
}

keepRefreshing();
