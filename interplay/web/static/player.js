// The assistant's voice: PCM16 chunks (one per 200 ms turn) played gap-free through a small jitter
// buffer. A chunk is scheduled `leadS` after the last one ends, or `leadS` from now after an underrun;
// more than `maxAheadS` queued means the page fell behind: the chunk is dropped (counted), never
// buffered without bound. `flush()` (barge-in) silences everything queued at once.

export class Player {
  constructor(ctx, counters, { leadS = 0.12, maxAheadS = 2.0 } = {}) {
    this.ctx = ctx;
    this.counters = counters;
    this.leadS = leadS;
    this.maxAheadS = maxAheadS;
    this.nextTime = 0;
    this.sources = new Set();
  }

  /** True while assistant audio is queued or sounding. */
  active() {
    return this.sources.size > 0;
  }

  push(pcm16Bytes, rate) {
    const samples = new Int16Array(pcm16Bytes);
    if (samples.length === 0) return;
    const now = this.ctx.currentTime;
    if (this.nextTime < now + 0.01) {
      if (this.nextTime > 0) this.counters.audioUnderruns += 1;
      this.nextTime = now + this.leadS;
    }
    if (this.nextTime - now > this.maxAheadS) {
      this.counters.audioChunksDropped += 1;
      return;
    }
    const buffer = this.ctx.createBuffer(1, samples.length, rate);
    const data = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) data[i] = samples[i] / 32768;
    const src = this.ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(this.ctx.destination);
    src.onended = () => {
      if (this.sources.delete(src) && !src.flushed) {
        this.counters.audioChunksPlayed += 1;
        this.counters.audioSecondsPlayed += buffer.duration;
      }
    };
    this.sources.add(src);
    src.start(this.nextTime);
    this.nextTime += buffer.duration;
  }

  /** Barge-in: stop what sounds and drop what is queued. */
  flush() {
    for (const src of this.sources) {
      src.flushed = true;
      try { src.stop(); } catch (_) { /* not started yet */ }
    }
    this.sources.clear();
    this.nextTime = 0;
  }
}
