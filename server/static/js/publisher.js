// What the WebSocket and WebRTC publishers share: the wish to stay connected, reconnecting with backoff,
// and a client time line that continues across reconnections (each new stream starts at its own 0 s).

import { Backoff, accessRefusal, fetchJson } from "./api.js";
import { accessProblem } from "./auth.js";

const HEALTHY_AFTER_MS = 10000; // a stream that lived this long resets the backoff
const STOP_TIMEOUT_MS = 10000; // how long a stop may take before the connection is dropped anyway

/**
 * Hooks a page gives a publisher:
 *   settings()               the detector settings to start (or restart) a stream with
 *   onStatus({state, text, level})   state: connecting | live | ending | retrying | stopped | failed
 *   onStarted(message)       a new stream started (its `started` message)
 *   onMessage(message)       every event: onset, odf, status, warning, error, configured, stopped
 *   onAccessRefused(error)   (optional) the server refused the access token (401/403 ApiError)
 */
export class Publisher {
  constructor(microphone, hooks) {
    this.microphone = microphone;
    this.hooks = hooks;
    this.backoff = new Backoff();
    this.wanted = false;
    this.retryTimer = null;
    this.liveSinceMs = 0;
    this.baseFrame = null; // client frame of the current stream's sample 0
    this.streamId = null;
    this.lastError = null;
    this._stopped = null; // resolves when a requested stop finished
    this.accessPath = null; // a WebSocket transport's path, asked over HTTP when its handshake fails
  }

  /** Client seconds (since the microphone opened) of stream time `t`. */
  clientTime(t) {
    return (this.baseFrame ?? 0) / this.microphone.sampleRate + t;
  }

  start() {
    this.wanted = true;
    this._stopped = null;
    this.backoff.reset();
    this._connect();
  }

  async stop() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    if (this._isLive()) {
      const done = new Promise((resolve) => {
        this._stopped = resolve;
      });
      this._requestStop();
      const timeout = new Promise((resolve) => setTimeout(resolve, STOP_TIMEOUT_MS));
      await Promise.race([done, timeout]);
      this._stopped = null;
    }
    this._teardown();
    this.hooks.onStatus({ state: "stopped", text: "Stopped", level: "" });
  }

  _connect() {
    this.baseFrame = null;
    this.streamId = null;
    this.lastError = null;
    this.hooks.onStatus({ state: "connecting", text: "Connecting…", level: "" });
    this._open();
  }

  _onStarted(message) {
    this.streamId = message.stream_id;
    this.liveSinceMs = performance.now();
    this.hooks.onStarted(message);
    this.hooks.onStatus({ state: "live", text: "Live", level: "" });
  }

  _onMessage(message) {
    if (message.type === "started") {
      this._onStarted(message);
      return;
    }
    if (message.type === "error") this.lastError = message;
    if (message.type === "error" && message.code === "shutdown") {
      // The server is going away: the socket closes once the rest is analysed; say so now, not then.
      this.hooks.onStatus({ state: "ending", text: "The server is shutting down; reconnecting when it is back…", level: "warn" });
    }
    if (message.type === "stopped" && this._stopped) this._stopped();
    this.hooks.onMessage(message);
  }

  /**
   * The connection ended: retry unless the user stopped or retrying cannot help. `refusal`: the access
   * checks refused the request (an ApiError with status 401 or 403).
   */
  async _ended({ everOpened, fatal, why, refusal = null }) {
    this._teardown();
    if (this._stopped) {
      this._stopped();
      return;
    }
    if (!this.wanted) return;
    if (this.liveSinceMs && performance.now() - this.liveSinceMs > HEALTHY_AFTER_MS) this.backoff.reset();
    this.liveSinceMs = 0;
    let text = why;
    if (!everOpened && !refusal && !fatal) {
      ({ text, refusal } = await this._whyUnreachable(why));
      if (!this.wanted) return;
    }
    if (refusal) {
      this._refused(refusal);
      return;
    }
    if (fatal) {
      this.wanted = false;
      this.hooks.onStatus({ state: "failed", text: `Stopped: ${why}`, level: "error" });
      return;
    }
    const delayS = this.backoff.next();
    this.hooks.onStatus({ state: "retrying", text: `${text} Reconnecting in ${delayS.toFixed(1)} s…`, level: "warn" });
    this.retryTimer = setTimeout(() => {
      if (this.wanted) this._connect();
    }, delayS * 1000);
  }

  /** Another token is needed: the same one would be refused again, so stop trying. */
  _refused(refusal) {
    this.wanted = false;
    if (this.hooks.onAccessRefused) this.hooks.onAccessRefused(refusal);
    this.hooks.onStatus({ state: "failed", text: `Access refused: ${accessProblem(refusal)}`, level: "error" });
  }

  /** Tell "the server is down" from "the server refused this connection" (and why, if it was the token). */
  async _whyUnreachable(why) {
    try {
      await fetchJson("/healthz", { cache: "no-store" });
    } catch {
      return { text: `Cannot reach the server at ${window.location.host}.`, refusal: null };
    }
    const refusal = this.accessPath ? await accessRefusal(this.accessPath) : null;
    return { text: `The server is up but refused the connection (${why}).`, refusal };
  }

  // Implemented by each transport:
  _open() {}
  _isLive() { return false; }
  _requestStop() {}
  _teardown() {}
  configure() {}
  sendAudio() {}
}
