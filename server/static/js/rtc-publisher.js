// Live stream over WebRTC (POST /api/v3/webrtc/offer): the microphone track goes as Opus; events,
// `configure` and `stop` travel on the `events` data channel, opened before the offer is made.

import { ApiError, PATHS, errorOf } from "./api.js";
import { accessProblem, authHeaders } from "./auth.js";
import { Publisher } from "./publisher.js";

const GATHER_TIMEOUT_MS = 3000; // host candidates on a LAN arrive at once; do not wait for slow STUN
const DISCONNECTED_GRACE_MS = 4000; // ICE "disconnected" may recover; after this it counts as lost
const CONNECT_TIMEOUT_MS = 15000; // from the answer to a connected peer (the server gives up after 20 s)
const NO_PATH = "WebRTC found no network path to the server (ICE failed). Use the WebSocket transport, or " +
  "give the server a STUN/TURN server (--ice-servers); browsers that hide local addresses behind mDNS " +
  "names need one.";

function iceGathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, GATHER_TIMEOUT_MS);
  });
}

export class RtcPublisher extends Publisher {
  constructor(microphone, hooks) {
    super(microphone, hooks);
    this.transport = "webrtc";
    this.pc = null;
    this.channel = null;
    this.latestFrame = 0;
    this.graceTimer = null;
    this.connectTimer = null;
  }

  async _open() {
    const pc = new RTCPeerConnection();
    this.pc = pc;
    const channel = pc.createDataChannel("events");
    this.channel = channel;
    let connected = false;
    let answered = false;
    const lost = (why) => {
      if (this.pc !== pc) return;
      const error = this.lastError;
      const detail = error ? `The stream ended: ${error.message} (${error.code}).` : why;
      this._ended({ everOpened: answered, fatal: false, why: connected ? detail : NO_PATH });
    };
    pc.addTransceiver(this.microphone.track, { direction: "sendonly" });
    channel.onmessage = (event) => {
      if (typeof event.data === "string") this._onMessage(JSON.parse(event.data));
    };
    channel.onclose = () => lost("The server closed the events channel.");
    pc.onconnectionstatechange = () => {
      const state = pc.connectionState;
      clearTimeout(this.graceTimer);
      if (state === "connected" && !connected) {
        connected = true;
        clearTimeout(this.connectTimer);
        // The server's time line starts with the first audio it receives: about now on ours.
        this.baseFrame = this.latestFrame;
      } else if (state === "failed" || state === "closed") {
        lost(`The WebRTC connection ${state}.`);
      } else if (state === "disconnected") {
        this.graceTimer = setTimeout(() => lost("The WebRTC connection was lost."), DISCONNECTED_GRACE_MS);
      }
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await iceGathered(pc);
      let response;
      try {
        response = await fetch(PATHS.webrtcOffer, {
          method: "POST",
          headers: authHeaders({ "Content-Type": "application/json" }),
          body: JSON.stringify({
            sdp: pc.localDescription.sdp,
            type: "offer",
            settings: { ...this.hooks.settings(), odf: true },
          }),
        });
      } catch (err) {
        throw new ApiError(0, "unreachable", `${err.message || err}`);
      }
      if (!response.ok) throw await errorOf(response);
      const answer = await response.json();
      if (this.pc !== pc) return; // stopped meanwhile
      this.streamId = answer.stream_id;
      answered = true;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      this.connectTimer = setTimeout(() => {
        if (!connected) lost(NO_PATH);
      }, CONNECT_TIMEOUT_MS);
    } catch (err) {
      if (this.pc !== pc) return;
      const fatal = err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 429;
      const why = err instanceof ApiError && err.status === 0
        ? "The offer could not be sent."
        : `The server refused the offer: ${err.message}${err.code ? ` (${err.code})` : ""}.`;
      const refusal = err instanceof ApiError && accessProblem(err) ? err : null;
      this._ended({ everOpened: !(err instanceof ApiError && err.status === 0), fatal, why, refusal });
    }
  }

  _isLive() {
    return this.channel !== null && this.channel.readyState === "open";
  }

  _requestStop() {
    this.channel.send(JSON.stringify({ type: "stop" }));
  }

  _teardown() {
    clearTimeout(this.graceTimer);
    clearTimeout(this.connectTimer);
    const pc = this.pc;
    const channel = this.channel;
    this.pc = null;
    this.channel = null;
    if (channel) channel.onmessage = channel.onclose = null;
    if (pc) {
      pc.onconnectionstatechange = null;
      pc.close();
    }
  }

  configure(changed) {
    if (this._isLive()) this.channel.send(JSON.stringify({ type: "configure", settings: changed }));
  }

  /** The audio goes on the media track; the chunks only keep the time line for the plot. */
  sendAudio(samples, endFrame) {
    this.latestFrame = endFrame;
  }

  get backlogS() {
    return 0;
  }

  /** The server dates each onset by its audio's arrival; with one clock (same machine) that gives a delay. */
  latencyMs(t, message) {
    if (!message || !Number.isFinite(message.wall_time)) return null;
    const ms = Date.now() - message.wall_time * 1000;
    return ms >= 0 && ms < 10000 ? ms : null;
  }
}
