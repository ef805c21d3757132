// The microphone: getUserMedia with the browser's voice processing off (it smears attacks), an
// AudioContext at the device's real rate, and the PCM worklet delivering ~20 ms mono chunks.

export const CHUNK_S = 0.02;
const RESUME_TIMEOUT_MS = 3000;

/** Why the microphone could not be opened, in words a musician can act on. */
export class MicrophoneError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind; // "insecure" | "denied" | "missing" | "busy" | "failed"
  }
}

function explain(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    return new MicrophoneError(
      "denied",
      "Microphone access was refused. Allow the microphone for this site (the icon at the left of the " +
        "address bar, or the browser's site settings), then press Start again.",
    );
  }
  if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
    return new MicrophoneError("missing", "No microphone was found. Connect an audio input and press Start again.");
  }
  if (name === "NotReadableError" || name === "AbortError" || name === "TrackStartError") {
    return new MicrophoneError(
      "busy",
      "The microphone could not be started: another application may be using it exclusively.",
    );
  }
  return new MicrophoneError("failed", `The microphone could not be opened: ${(err && err.message) || err}`);
}

/** Audio inputs the browser lists (labels appear once permission was given). */
export async function listInputs() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return [];
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices.filter((d) => d.kind === "audioinput");
}

export class Microphone {
  /** @param {(samples: Float32Array, endFrame: number) => void} onChunk  mono chunks, in order */
  constructor(onChunk) {
    this.onChunk = onChunk;
    this.stream = null;
    this.context = null;
    this.node = null;
    this.onEnded = () => {};
  }

  get sampleRate() {
    return this.context ? this.context.sampleRate : 0;
  }

  get track() {
    return this.stream ? this.stream.getAudioTracks()[0] : null;
  }

  /** Open the input `deviceId` (or the default). Throws MicrophoneError. */
  async open(deviceId = "") {
    if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
      throw new MicrophoneError(
        "insecure",
        "Browsers only give the microphone to pages served over HTTPS or from localhost. Open this page " +
          "as http://localhost:… on the server's machine, or serve it over HTTPS.",
      );
    }
    const audio = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
    if (deviceId) audio.deviceId = { exact: deviceId };
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ audio });
    } catch (err) {
      throw explain(err);
    }
    try {
      await this._connect();
    } catch (err) {
      this.close();
      throw new MicrophoneError("failed", `The audio engine could not start: ${err.message || err}`);
    }
    this.track.addEventListener("ended", () => this.onEnded());
  }

  async _connect() {
    let context = new AudioContext({ latencyHint: "interactive" });
    let source;
    try {
      source = context.createMediaStreamSource(this.stream);
    } catch (err) {
      // Firefox cannot connect a device whose rate differs from the context's: follow the device.
      await context.close();
      const rate = this.track.getSettings().sampleRate;
      if (!rate) throw err;
      context = new AudioContext({ latencyHint: "interactive", sampleRate: rate });
      source = context.createMediaStreamSource(this.stream);
    }
    this.context = context;
    await context.audioWorklet.addModule(new URL("./pcm-worklet.js", import.meta.url));
    const node = new AudioWorkletNode(context, "pcm-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { chunkFrames: Math.round(context.sampleRate * CHUNK_S) },
    });
    node.port.onmessage = (event) => this.onChunk(event.data.samples, event.data.endFrame);
    const mute = context.createGain();
    mute.gain.value = 0; // the graph must reach the destination to run everywhere; nothing is heard
    source.connect(node).connect(mute).connect(context.destination);
    this.node = node;
    if (context.state !== "running") {
      // resume() waits for a user gesture when the browser blocks audio: do not wait for ever.
      const timeout = new Promise((resolve) => setTimeout(resolve, RESUME_TIMEOUT_MS));
      await Promise.race([context.resume(), timeout]);
      if (context.state !== "running") {
        throw new Error("the browser did not start audio processing (audio blocked, or no audio device); press Start again");
      }
    }
  }

  close() {
    if (this.node) {
      this.node.port.postMessage("close");
      this.node.disconnect();
      this.node = null;
    }
    if (this.stream) {
      for (const track of this.stream.getTracks()) track.stop();
      this.stream = null;
    }
    if (this.context) {
      this.context.close().catch(() => {});
      this.context = null;
    }
  }
}
