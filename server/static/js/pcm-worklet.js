// AudioWorklet processor: the microphone's input averaged to mono and posted to the page in chunks of
// `chunkFrames` float32 samples (about 20 ms), each with the running frame count at its end. The page
// sends them as pcm_f32le; the server averages channels to mono too, so nothing is lost by mixing here.

class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunkFrames = options.processorOptions.chunkFrames;
    this.chunk = new Float32Array(this.chunkFrames);
    this.filled = 0;
    this.frames = 0;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data === "close") this.running = false;
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (!this.running) return false;
    if (!channels || channels.length === 0) return true; // no input connected yet
    const n = channels[0].length;
    const scale = 1 / channels.length;
    for (let i = 0; i < n; i += 1) {
      let sum = 0;
      for (let c = 0; c < channels.length; c += 1) sum += channels[c][i];
      this.chunk[this.filled] = sum * scale;
      this.filled += 1;
      this.frames += 1;
      if (this.filled === this.chunkFrames) {
        this.port.postMessage({ samples: this.chunk, endFrame: this.frames }, [this.chunk.buffer]);
        this.chunk = new Float32Array(this.chunkFrames);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
