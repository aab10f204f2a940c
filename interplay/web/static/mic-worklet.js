// The microphone's AudioWorklet: the context's float samples (any rate) -> 16 kHz mono PCM16,
// posted to the page in frames of 320 samples (20 ms), each with its RMS (for barge-in).
// It never blocks the audio thread: it only resamples, converts and posts.

const OUT_RATE = 16000;
const FRAME = 320;

class MicProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / OUT_RATE; // input samples per output sample
    this.pos = 0; // fractional read position into the pending input
    this.pending = new Float32Array(0);
    this.frame = new Int16Array(FRAME);
    this.fill = 0;
    this.energy = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0 || !channels[0]) return true;
    const mono = channels[0]; // the first channel is the microphone's
    const buf = new Float32Array(this.pending.length + mono.length);
    buf.set(this.pending);
    buf.set(mono, this.pending.length);
    while (this.pos + 1 < buf.length || (this.step === 1 && this.pos < buf.length)) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const x = this.step === 1 ? buf[i] : buf[i] * (1 - frac) + buf[i + 1] * frac;
      const s = Math.max(-1, Math.min(1, x));
      this.frame[this.fill++] = s < 0 ? s * 32768 : s * 32767;
      this.energy += s * s;
      if (this.fill === FRAME) {
        const out = this.frame.buffer.slice(0);
        this.port.postMessage({ pcm: out, rms: Math.sqrt(this.energy / FRAME) }, [out]);
        this.fill = 0;
        this.energy = 0;
      }
      this.pos += this.step;
    }
    const used = Math.floor(this.pos);
    this.pending = buf.slice(used);
    this.pos -= used;
    return true;
  }
}

registerProcessor("interplay-mic", MicProcessor);
