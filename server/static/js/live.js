// The live page: microphone → AudioWorklet → server (WebSocket or WebRTC), onsets back, plotted live.

import { TokenField } from "./auth.js";
import { Microphone, listInputs } from "./microphone.js";
import { OscPanel } from "./osc-panel.js";
import { TempoDisplay } from "./rhythm.js";
import { RtcPublisher } from "./rtc-publisher.js";
import { Scope } from "./scope.js";
import { SettingsPanel } from "./settings.js";
import { Timeline } from "./timeline.js";
import { $, logLine, markChecked, median, setBanner, setPill } from "./ui.js";
import { WsPublisher } from "./ws-publisher.js";

const STATS_INTERVAL_MS = 200;
const LATENCY_SAMPLES = 20;

const ui = {
  banner: $("#banner"),
  pill: $("#state"),
  start: $("#start"),
  transport: $("#transport"),
  device: $("#device"),
  format: $("#format"),
  monitorLink: $("#monitor-link"),
  window: $("#window"),
  log: $("#log"),
  count: $("#stat-count"),
  last: $("#stat-last"),
  rate: $("#stat-rate"),
  latency: $("#stat-latency"),
  latencySub: $("#stat-latency-sub"),
  lag: $("#stat-lag"),
  lagSub: $("#stat-lag-sub"),
  level: $("#stat-level"),
  levelSub: $("#stat-level-sub"),
};
const tempo = new TempoDisplay($("#stat-bpm"), $("#beat"), $("#stat-beat"));

/** One run of the microphone, from Start to Stop (reconnections included). */
class Session {
  constructor(transport) {
    this.transport = transport;
    this.microphone = new Microphone((samples, endFrame) => this._chunk(samples, endFrame));
    this.publisher = null;
    this.timeline = null;
    this.onsets = 0;
    this.latencies = [];
    this.detectorLatencyMs = null;
    this.lagS = 0;
    this.droppedS = 0;
    this.streamStartS = 0;
    this.lastStreamTime = null; // stream time of the last onset (the time base the monitor shows too)
  }

  async open(deviceId) {
    await this.microphone.open(deviceId);
    this.timeline = this.timeline || new Timeline(this.microphone.sampleRate);
    const Transport = this.transport === "webrtc" ? RtcPublisher : WsPublisher;
    this.publisher = new Transport(this.microphone, {
      settings: () => ({ ...settings.values(), ...outputs.values() }),
      onStatus: (status) => onStatus(status),
      onStarted: (message) => this._started(message),
      onMessage: (message) => this._message(message),
      onAccessRefused: () => tokenField.demand(),
    });
    this.microphone.onEnded = () => {
      setBanner(ui.banner, "error", "The microphone was disconnected. Connect it and press Start again.");
      stop();
    };
    this.publisher.start();
  }

  async close() {
    if (this.publisher) await this.publisher.stop();
    this.microphone.close();
  }

  /** Seconds since the current stream's first sample: the time base of the log, as on the monitor. */
  _streamNow() {
    return this.publisher && this.timeline ? Math.max(0, this.timeline.now - this.publisher.clientTime(0)) : 0;
  }

  _chunk(samples, endFrame) {
    // Chunks may flow before open() returns (while the AudioContext resumes): the time line starts with them.
    if (!this.timeline) this.timeline = new Timeline(this.microphone.sampleRate);
    this.timeline.addAudio(samples);
    if (this.publisher) this.publisher.sendAudio(samples, endFrame);
  }

  _started(message) {
    this.detectorLatencyMs = message.latency_ms;
    this.streamStartS = this.timeline.now;
    scope.hopS = message.hop_ms / 1000;
    settings.setMethods(message.detector.methods);
    settings.setEffective(message.settings);
    scope.threshold = settings.values().threshold;
    scope.detector = message.detector;
    // The rate the server analyses at (WebRTC: Opus decoded at 48 kHz, whatever the microphone's rate).
    const analysedHz = message.sample_rate || this.microphone.sampleRate;
    const khz = (analysedHz / 1000).toFixed(1);
    ui.format.textContent = `${khz} kHz · ${this.transport} · stream ${message.stream_id}`;
    ui.format.title = analysedHz === this.microphone.sampleRate ? "" :
      `microphone at ${(this.microphone.sampleRate / 1000).toFixed(1)} kHz, analysed at ${khz} kHz`;
    ui.monitorLink.href = `/monitor?stream=${encodeURIComponent(message.stream_id)}`;
    ui.monitorLink.classList.remove("hidden");
    logLine(ui.log, {
      kind: "started", cls: "info", time: this._streamNow().toFixed(3),
      text: `stream ${message.stream_id} analysed at ${analysedHz} Hz; detector latency ${message.latency_ms} ms`,
    });
  }

  _message(message) {
    const publisher = this.publisher;
    switch (message.type) {
      case "onset": {
        const time = publisher.clientTime(message.time); // the plot's time line (continues across reconnects)
        this.timeline.addOnset(time, message.strength, message.band);
        this.onsets += 1;
        this.lastStreamTime = message.time;
        const latency = publisher.latencyMs(message.time, message);
        if (latency !== null) {
          this.latencies.push(latency);
          if (this.latencies.length > LATENCY_SAMPLES) this.latencies.shift();
        }
        logLine(ui.log, {
          kind: "onset", time: message.time.toFixed(3), // stream time, as the monitor shows it
          text: `strength ${message.strength.toFixed(2)}${message.band ? ` · ${message.band}` : ""}`
            + `${latency !== null ? ` · ${Math.round(latency)} ms` : ""}`,
          data: { time: time.toFixed(6), streamTime: message.time, strength: message.strength,
                  ...(message.band ? { band: message.band } : {}) },
        });
        break;
      }
      case "odf":
        this.timeline.addOdf(publisher.clientTime(message.start), message.hop_s, message.values);
        break;
      case "beat":
        tempo.beat(message);
        break;
      case "status":
        tempo.status(message.tempo);
        this.lagS = message.lag_s;
        this.droppedS = message.dropped_s;
        break;
      case "configured":
        settings.setEffective(message.settings);
        scope.threshold = settings.values().threshold;
        scope.detector = message.detector;
        break;
      case "warning":
        setBanner(ui.banner, "warn", message.message);
        logLine(ui.log, { kind: "warning", time: this._streamNow().toFixed(3), text: message.message });
        break;
      case "error":
        if (message.code === "bad_settings") setBanner(ui.banner, "warn", `Setting not applied: ${message.message}`);
        logLine(ui.log, { kind: "error", time: this._streamNow().toFixed(3), text: `${message.code}: ${message.message}` });
        break;
      case "stopped":
        logLine(ui.log, {
          kind: "stopped", cls: "info", time: this._streamNow().toFixed(3),
          text: `${message.onsets} onsets in ${message.duration.toFixed(1)} s`,
        });
        break;
      default:
        break;
    }
  }

  renderStats() {
    const tl = this.timeline;
    if (!tl) return;
    ui.count.textContent = String(this.onsets);
    ui.last.textContent = this.lastStreamTime === null ? "–" : `last at ${this.lastStreamTime.toFixed(3)} s stream time`;
    const rate = tl.onsetsPerMinute(this.streamStartS);
    ui.rate.textContent = rate === null ? "–" : rate.toFixed(0);
    const latency = median(this.latencies);
    ui.latency.textContent = latency === null ? "–" : `${Math.round(latency)} ms`;
    const detector = this.detectorLatencyMs === null ? "–" : `${Math.round(this.detectorLatencyMs)} ms`;
    ui.latencySub.textContent = this.transport === "webrtc"
      ? `from arrival at the server · detector ${detector}`
      : `sound to screen · detector ${detector}`;
    const backlog = this.publisher ? this.publisher.backlogS : 0;
    ui.lag.textContent = `${Math.round((this.lagS + backlog) * 1000)} ms`;
    ui.lagSub.textContent = this.droppedS > 0 ? `${this.droppedS.toFixed(1)} s of audio dropped` : "audio waiting for analysis";
    const peak = tl.takePeakDb();
    ui.level.textContent = Number.isFinite(peak) ? peak.toFixed(0) : "−∞";
    ui.levelSub.textContent = `dBFS · gate ${settings.values().silence_db} dBFS`;
  }
}

let session = null;
const tokenField = new TokenField($("#token-form"), () => {
  if (!session) setBanner(ui.banner, "info", "Access token saved for this tab. Press Start microphone to use it.");
  outputs.load(); // the OSC targets may have been refused without the token
});
const scope = new Scope($("#scope"), null);
const settings = new SettingsPanel($("#settings"), {
  storageKey: "transient.live.settings",
  onChange: (changed) => {
    if (session && session.publisher) session.publisher.configure(changed);
    scope.threshold = settings.values().threshold;
  },
});
const outputs = new OscPanel($("#outputs"), {
  storageKey: "transient.live.outputs",
  onChange: (changed) => {
    if (session && session.publisher) session.publisher.configure(changed);
  },
});
outputs.load();
scope.threshold = settings.values().threshold;
scope.draw();

function onStatus({ state, text, level }) {
  if (state === "stopped" && ui.pill.dataset.state === "error") return; // keep showing why it stopped
  if (state === "retrying" && session) ui.format.textContent = `${session.transport} · waiting for the server…`;
  const pillState = { live: "live", connecting: "connecting", ending: "connecting", retrying: "connecting", failed: "error" }[state] || "idle";
  const pillText = { live: "Live", ending: "Server stopping", retrying: "Reconnecting" }[state] || text.split(":")[0];
  setPill(ui.pill, pillState, pillText);
  if (level) setBanner(ui.banner, level, text);
  else if (state === "live" && ui.banner.dataset.level !== "error") setBanner(ui.banner, "", "");
  if (state === "failed") stop();
}

function selectedTransport() {
  return ui.transport.querySelector("input:checked").value;
}

function setRunning(running) {
  ui.start.textContent = running ? "Stop" : "Start microphone";
  ui.start.classList.toggle("stop", running);
  ui.start.classList.toggle("primary", !running);
  for (const input of ui.transport.querySelectorAll("input")) input.disabled = running;
  ui.device.disabled = running;
}

async function refreshDevices() {
  const inputs = await listInputs().catch(() => []);
  const chosen = ui.device.value;
  ui.device.replaceChildren(new Option("Default microphone", ""));
  inputs.forEach((device, i) => {
    if (device.deviceId && device.deviceId !== "default") {
      ui.device.append(new Option(device.label || `Microphone ${i + 1}`, device.deviceId));
    }
  });
  ui.device.value = [...ui.device.options].some((o) => o.value === chosen) ? chosen : "";
}

async function start() {
  ui.start.disabled = true;
  setBanner(ui.banner, "", "");
  ui.log.replaceChildren();
  tempo.reset();
  const candidate = new Session(selectedTransport());
  try {
    await candidate.open(ui.device.value);
  } catch (err) {
    candidate.microphone.close();
    setBanner(ui.banner, "error", err.message);
    setPill(ui.pill, "error", err.kind === "denied" ? "No microphone access" : "Microphone error");
    ui.start.disabled = false;
    return;
  }
  session = candidate;
  scope.timeline = session.timeline;
  scope.start();
  setRunning(true);
  ui.start.disabled = false;
  refreshDevices();
}

async function stop() {
  const ending = session;
  if (!ending) return;
  session = null;
  ui.start.disabled = true;
  ui.start.textContent = "Stopping…";
  await ending.close();
  ending.renderStats();
  scope.stop();
  setRunning(false);
  ui.start.disabled = false;
  if (ui.pill.dataset.state !== "error") setPill(ui.pill, "idle", "Stopped");
}

ui.start.addEventListener("click", () => (session ? stop() : start()));
ui.transport.addEventListener("change", () => markChecked(ui.transport));
ui.window.addEventListener("change", () => {
  scope.windowS = Number(ui.window.value);
  scope.draw();
});
scope.windowS = Number(ui.window.value);
markChecked(ui.transport);
refreshDevices();
if (navigator.mediaDevices) navigator.mediaDevices.addEventListener("devicechange", refreshDevices);
setInterval(() => {
  if (session) session.renderStats();
}, STATS_INTERVAL_MS);
window.addEventListener("resize", () => scope.draw());
