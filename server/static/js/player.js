// Playback of the uploaded file from any point: sample-accurate from the decoded AudioBuffer, or through
// an <audio> element when the browser could not decode the file (or it is too long to decode).

const RESUME_TIMEOUT_MS = 3000;

export class Player {
  constructor() {
    this.context = null;
    this.buffer = null;
    this.element = null;
    this.source = null;
    this.startedAt = 0; // context time when playback (re)started
    this.offset = 0; // file time at startedAt, or where playback paused
    this.playing = false;
    this.onEnded = () => {};
  }

  /** Play decoded audio. */
  useBuffer(buffer) {
    this.reset();
    this.buffer = buffer;
  }

  /** Play the file itself (a blob: URL) through the browser's media element. */
  useElement(url) {
    this.reset();
    this.element = new Audio(url);
    this.element.preload = "auto";
    this.element.addEventListener("ended", () => {
      this.playing = false;
      this.onEnded();
    });
  }

  get ready() {
    return Boolean(this.buffer || this.element);
  }

  /** Seconds into the file. */
  get time() {
    if (this.element) return this.element.currentTime;
    if (!this.playing || !this.context) return this.offset;
    return this.offset + (this.context.currentTime - this.startedAt);
  }

  async play(from = this.time) {
    if (this.element) {
      this.element.currentTime = from;
      await this.element.play();
      this.playing = true;
      return;
    }
    if (!this.buffer) return;
    if (!this.context) this.context = new AudioContext({ latencyHint: "interactive" });
    if (this.context.state !== "running") {
      // resume() never settles when the browser blocks audio or has no output device: do not wait for ever.
      const timeout = new Promise((resolve) => setTimeout(resolve, RESUME_TIMEOUT_MS));
      await Promise.race([this.context.resume(), timeout]);
      if (this.context.state !== "running") throw new Error("the browser did not start audio output (no audio device?)");
    }
    this._stopSource();
    const source = this.context.createBufferSource();
    source.buffer = this.buffer;
    source.connect(this.context.destination);
    source.onended = () => {
      if (this.source !== source) return;
      this.offset = this.buffer.duration;
      this.playing = false;
      this.source = null;
      this.onEnded();
    };
    const start = Math.min(Math.max(0, from), this.buffer.duration);
    source.start(0, start);
    this.source = source;
    this.startedAt = this.context.currentTime;
    this.offset = start;
    this.playing = true;
  }

  pause() {
    if (this.element) {
      this.element.pause();
    } else {
      this.offset = this.time;
      this._stopSource();
    }
    this.playing = false;
  }

  reset() {
    this._stopSource();
    if (this.element) {
      this.element.pause();
      this.element.removeAttribute("src");
      this.element = null;
    }
    this.buffer = null;
    this.offset = 0;
    this.playing = false;
  }

  _stopSource() {
    const source = this.source;
    this.source = null;
    if (source) {
      source.onended = null;
      source.stop();
      source.disconnect();
    }
  }
}
