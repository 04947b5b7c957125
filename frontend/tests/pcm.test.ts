import { describe, expect, it } from 'vitest';
import {
  base64ToBytes, bytesToBase64, bytesToPcm16, floatToPcm16, Framer, frameSamplesFor, pcm16ToBytes, pcm16ToFloat,
  Resampler, rms,
} from '../src/audio/pcm';

function sine(freq: number, rate: number, seconds: number, amp = 0.5): Float32Array {
  const n = Math.round(rate * seconds);
  return Float32Array.from({ length: n }, (_, i) => amp * Math.sin((2 * Math.PI * freq * i) / rate));
}

/** Dominant frequency by counting upward zero crossings. */
function zeroCrossFreq(x: Float32Array, rate: number): number {
  let c = 0;
  for (let i = 1; i < x.length; i++) if (x[i - 1] < 0 && x[i] >= 0) c++;
  return (c * rate) / x.length;
}

describe('floatToPcm16', () => {
  it('maps the float range onto int16 and clamps overshoot', () => {
    const out = floatToPcm16(Float32Array.from([0, 1, -1, 0.5, -0.5, 1.7, -3, Number.NaN]));
    expect(Array.from(out.slice(0, 7))).toEqual([0, 32767, -32768, 16384, -16384, 32767, -32768]);
  });

  it('round-trips through PCM16 within one quantization step', () => {
    const x = sine(440, 16000, 0.05);
    const back = pcm16ToFloat(floatToPcm16(x));
    for (let i = 0; i < x.length; i++) expect(Math.abs(back[i] - x[i])).toBeLessThan(1 / 32768 + 1e-6);
  });

  it('writes little-endian bytes and reads them back', () => {
    const pcm = Int16Array.from([1, -2, 0x1234, -32768]);
    const bytes = pcm16ToBytes(pcm);
    expect(Array.from(bytes.slice(0, 6))).toEqual([1, 0, 0xfe, 0xff, 0x34, 0x12]);
    expect(Array.from(bytesToPcm16(bytes))).toEqual(Array.from(pcm));
    expect(() => bytesToPcm16(new Uint8Array(3))).toThrow(RangeError);
  });

  it('base64 round-trips frames larger than the chunking step', () => {
    const bytes = Uint8Array.from({ length: 70000 }, (_, i) => (i * 31) % 256);
    expect(Array.from(base64ToBytes(bytesToBase64(bytes)))).toEqual(Array.from(bytes));
  });
});

describe('Resampler', () => {
  it.each([48000, 44100, 22050, 16000, 8000])('converts %i Hz to 16 kHz at the right length and pitch', (rate) => {
    const r = new Resampler(rate, 16000);
    const x = sine(440, rate, 1);
    const parts: Float32Array[] = [];
    // feed render-quantum sized blocks, as the AudioWorklet does
    for (let i = 0; i < x.length; i += 128) parts.push(r.process(x.subarray(i, i + 128)));
    const y = Float32Array.from(parts.flatMap((p) => Array.from(p)));
    expect(Math.abs(y.length - 16000)).toBeLessThanOrEqual(3);
    expect(Math.abs(zeroCrossFreq(y, 16000) - 440)).toBeLessThanOrEqual(2);
  });

  it('joins blocks without discontinuities (same output as one big block)', () => {
    const x = sine(300, 48000, 0.3);
    const whole = new Resampler(48000).process(x);
    const r = new Resampler(48000);
    const parts: number[] = [];
    for (let i = 0; i < x.length; i += 128) parts.push(...r.process(x.subarray(i, i + 128)));
    const n = Math.min(whole.length, parts.length);
    expect(n).toBeGreaterThan(4700);
    for (let i = 0; i < n; i++) expect(Math.abs(parts[i] - whole[i])).toBeLessThan(1e-6);
  });

  it('attenuates content above the new Nyquist when downsampling', () => {
    const loud = rms(new Resampler(48000).process(sine(12000, 48000, 0.2)));
    expect(loud).toBeLessThan(0.35 * rms(sine(12000, 48000, 0.2)));
  });

  it('refuses nonsense rates', () => {
    expect(() => new Resampler(0)).toThrow(RangeError);
  });
});

describe('Framer', () => {
  it('emits exact frames of the requested size across arbitrary pushes', () => {
    const f = new Framer(frameSamplesFor(100));
    expect(f.frameSamples).toBe(1600);
    const frames: Int16Array[] = [];
    let next = 0;
    for (const size of [128, 1000, 3, 2000, 1, 1600, 500]) {
      const block = Int16Array.from({ length: size }, () => next++ % 30000);
      frames.push(...f.push(block));
    }
    expect(frames.map((x) => x.length)).toEqual([1600, 1600, 1600]);
    const flat = frames.flatMap((x) => Array.from(x));
    expect(flat).toEqual(Array.from({ length: 4800 }, (_, i) => i % 30000));
    const rest = f.flush();
    expect(rest.length).toBe(next - 4800);
    expect(f.flush().length).toBe(0);
  });

  it('only allows the protocol frame lengths (20-300 ms)', () => {
    expect(frameSamplesFor(20)).toBe(320);
    expect(frameSamplesFor(300)).toBe(4800);
    expect(() => frameSamplesFor(10)).toThrow(RangeError);
    expect(() => frameSamplesFor(500)).toThrow(RangeError);
    expect(() => new Framer(0)).toThrow(RangeError);
  });
});

describe('rms', () => {
  it('measures float and int16 blocks on the same scale', () => {
    expect(rms(new Float32Array(0))).toBe(0);
    const x = sine(200, 16000, 0.1, 0.5);
    expect(rms(x)).toBeCloseTo(0.5 / Math.SQRT2, 2);
    expect(rms(floatToPcm16(x))).toBeCloseTo(rms(x), 3);
  });
});
