// Live stream over WebSocket (/api/v3/stream): `start` with the AudioContext's real rate, then the
// microphone's mono chunks as binary pcm_f32le frames; events come back as JSON text frames.

import { FATAL_CLOSE_CODES, PATHS, describeClose, wsUrl } from "./api.js";
import { Publisher } from "./publisher.js";

const MAX_BACKLOG_S = 5; // audio waiting in the browser's send buffer before the stream is restarted
const SENT_MARKS = 1000; // (end frame, send time) pairs kept for measuring latency, ~20 s of chunks

export class WsPublisher extends Publisher {
  constructor(microphone, hooks) {
    super(microphone, hooks);
    this.transport = "websocket";
    this.accessPath = PATHS.stream;
    this.ws = null;
    this.started = false;
    this.sent = []; // [endFrame, performance.now()] of each chunk sent, oldest first
  }

  _open() {
    const ws = new WebSocket(wsUrl(PATHS.stream));
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.started = false;
    this.sent = [];
    let opened = false;
    ws.onopen = () => {
      opened = true;
      ws.send(JSON.stringify({
        type: "start",
        sample_rate: this.microphone.sampleRate,
        channels: 1,
        encoding: "pcm_f32le",
        settings: { ...this.hooks.settings(), odf: true },
      }));
    };
    ws.onmessage = (event) => {
      if (typeof event.data !== "string") return;
      const message = JSON.parse(event.data);
      if (message.type === "started") this.started = true;
      this._onMessage(message);
    };
    ws.onclose = (event) => {
      const error = this.lastError;
      const detail = error ? `${error.message} (${error.code})` : describeClose(event.code, event.reason);
      this._ended({
        everOpened: opened,
        fatal: FATAL_CLOSE_CODES.has(event.code),
        why: opened ? `The connection closed: ${detail}.` : "The connection failed.",
      });
    };
  }

  _isLive() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.started;
  }

  _requestStop() {
    this.started = false; // no more audio
    this.ws.send(JSON.stringify({ type: "stop" }));
  }

  _teardown() {
    const ws = this.ws;
    this.ws = null;
    this.started = false;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000);
    }
  }

  configure(changed) {
    if (this._isLive()) this.ws.send(JSON.stringify({ type: "configure", settings: changed }));
  }

  /** Send one chunk once the stream has started; the first one sent is the stream's sample 0. */
  sendAudio(samples, endFrame) {
    const ws = this.ws;
    if (!this._isLive()) return;
    const rate = this.microphone.sampleRate;
    if (ws.bufferedAmount > MAX_BACKLOG_S * rate * 4) {
      // Restart rather than skip audio: skipping would shift every later onset time.
      ws.onclose = null;
      ws.close(1000);
      this._ended({ everOpened: true, fatal: false, why: `The network could not keep up (${MAX_BACKLOG_S} s of audio waiting).` });
      return;
    }
    if (this.baseFrame === null) this.baseFrame = endFrame - samples.length;
    ws.send(samples.buffer);
    this.sent.push([endFrame, performance.now()]);
    if (this.sent.length > SENT_MARKS) this.sent.splice(0, this.sent.length - SENT_MARKS);
  }

  /** Seconds queued in the browser, not yet handed to the network. */
  get backlogS() {
    return this.ws ? this.ws.bufferedAmount / 4 / (this.microphone.sampleRate || 1) : 0;
  }

  /**
   * Milliseconds from the capture of stream time `t` to now (the onset's arrival), or null. A chunk's
   * last sample is taken as captured when the chunk was sent; the device's own input delay is not seen.
   */
  latencyMs(t) {
    if (this.baseFrame === null) return null;
    const rate = this.microphone.sampleRate;
    const frame = this.baseFrame + t * rate;
    const mark = this.sent.find(([endFrame]) => endFrame >= frame);
    if (!mark) return null;
    const capturedAt = mark[1] - ((mark[0] - frame) / rate) * 1000;
    return performance.now() - capturedAt;
  }
}
