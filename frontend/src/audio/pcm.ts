/**
 * Microphone audio framing: float samples at the AudioContext rate -> PCM16 mono at 16 kHz,
 * cut into fixed-length frames. Pure functions and small classes so the AudioWorklet and the
 * unit tests share one implementation.
 */

export const TARGET_RATE = 16000;

/** Converts float samples in [-1, 1] to little-endian PCM16, clamping out-of-range values. */
export function floatToPcm16(input: Float32Array): Int16Array {
  const out = new Int16Array(input.length);
  for (let i = 0; i < input.length; i++) {
    const s = Math.max(-1, Math.min(1, input[i]));
    out[i] = s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff);
  }
  return out;
}

/** Converts PCM16 samples back to floats in [-1, 1). */
export function pcm16ToFloat(input: Int16Array): Float32Array {
  const out = new Float32Array(input.length);
  for (let i = 0; i < input.length; i++) out[i] = input[i] / 0x8000;
  return out;
}

/**
 * Streaming linear-interpolation resampler. Keeps its fractional position and the last input
 * sample between calls so consecutive blocks join without clicks or drift.
 *
 * Downsampling from 48 kHz first averages each output's neighbourhood (a box filter over the
 * ratio) to keep aliasing low enough for speech recognition.
 */
export class Resampler {
  readonly ratio: number;
  private pos = 0; // position of the next output sample, in input samples relative to `buffer`
  private buffer: Float32Array = new Float32Array(0);

  constructor(
    readonly fromRate: number,
    readonly toRate: number = TARGET_RATE,
  ) {
    if (!(fromRate > 0) || !(toRate > 0)) throw new RangeError(`invalid rates ${fromRate} -> ${toRate}`);
    this.ratio = fromRate / toRate;
  }

  /** Resamples one block; returns however many output samples are complete so far. */
  process(input: Float32Array): Float32Array {
    if (this.fromRate === this.toRate) return input.slice();
    const data = new Float32Array(this.buffer.length + input.length);
    data.set(this.buffer, 0);
    data.set(input, this.buffer.length);
    const out: number[] = [];
    const half = this.ratio > 1 ? this.ratio / 2 : 0;
    while (this.pos + 1 + half < data.length) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      let v = data[i] * (1 - frac) + data[i + 1] * frac;
      if (half > 0) {
        const lo = Math.max(0, Math.ceil(this.pos - half));
        const hi = Math.min(data.length - 1, Math.floor(this.pos + half));
        let sum = 0;
        for (let k = lo; k <= hi; k++) sum += data[k];
        v = hi >= lo ? sum / (hi - lo + 1) : v;
      }
      out.push(v);
      this.pos += this.ratio;
    }
    // keep what later outputs still need (including the averaging window behind them)
    const keepFrom = Math.max(0, Math.floor(this.pos - half) - 1);
    this.buffer = data.slice(keepFrom);
    this.pos -= keepFrom;
    return Float32Array.from(out);
  }
}

/** Accumulates PCM16 samples and emits frames of exactly `frameSamples`. */
export class Framer {
  private pending: Int16Array;
  private fill = 0;

  constructor(readonly frameSamples: number) {
    if (!Number.isInteger(frameSamples) || frameSamples <= 0) throw new RangeError('frameSamples must be > 0');
    this.pending = new Int16Array(frameSamples);
  }

  /** Adds samples; returns the frames completed by them (each a fresh buffer). */
  push(samples: Int16Array): Int16Array[] {
    const frames: Int16Array[] = [];
    let offset = 0;
    while (offset < samples.length) {
      const take = Math.min(this.frameSamples - this.fill, samples.length - offset);
      this.pending.set(samples.subarray(offset, offset + take), this.fill);
      this.fill += take;
      offset += take;
      if (this.fill === this.frameSamples) {
        frames.push(this.pending);
        this.pending = new Int16Array(this.frameSamples);
        this.fill = 0;
      }
    }
    return frames;
  }

  /** Returns the partial frame (possibly empty) and resets; used when push-to-talk is released. */
  flush(): Int16Array {
    const rest = this.pending.slice(0, this.fill);
    this.fill = 0;
    return rest;
  }
}

/** Samples per frame for a frame length in milliseconds at `rate`. */
export function frameSamplesFor(ms: number, rate: number = TARGET_RATE): number {
  if (ms < 20 || ms > 300) throw new RangeError('frames must be 20-300 ms (protocol v1)');
  return Math.round((rate * ms) / 1000);
}

/** Root-mean-square level of float samples (0 for an empty block). */
export function rms(samples: Float32Array | Int16Array): number {
  if (samples.length === 0) return 0;
  const scale = samples instanceof Int16Array ? 1 / 0x8000 : 1;
  let sum = 0;
  for (let i = 0; i < samples.length; i++) {
    const v = samples[i] * scale;
    sum += v * v;
  }
  return Math.sqrt(sum / samples.length);
}

/** Base64 of raw bytes, in chunks so large frames don't overflow the argument list. */
export function bytesToBase64(bytes: Uint8Array): string {
  let binary = '';
  const step = 0x8000;
  for (let i = 0; i < bytes.length; i += step) {
    binary += String.fromCharCode(...bytes.subarray(i, i + step));
  }
  return btoa(binary);
}

export function base64ToBytes(b64: string): Uint8Array {
  const binary = atob(b64);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** PCM16 little-endian bytes -> Int16Array (copies, so odd offsets and big-endian hosts are safe). */
export function bytesToPcm16(bytes: Uint8Array): Int16Array {
  if (bytes.length % 2 !== 0) throw new RangeError('PCM16 data must have an even number of bytes');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Int16Array(bytes.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(i * 2, true);
  return out;
}

export function pcm16ToBytes(samples: Int16Array): Uint8Array {
  const out = new Uint8Array(samples.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < samples.length; i++) view.setInt16(i * 2, samples[i], true);
  return out;
}
