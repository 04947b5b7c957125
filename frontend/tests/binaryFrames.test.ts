import { describe, expect, it } from 'vitest';
import { decodeAudioOut, encodeAudioIn } from '../src/protocol/binaryFrames';

/** A reply frame built byte by byte from docs/protocol.md's table (not with the code under test). */
function replyFrame(opts: { mode: number; text: string; pcm: number[]; kind?: number }): ArrayBuffer {
  const text = new TextEncoder().encode(opts.text);
  const buf = new ArrayBuffer(36 + text.length + opts.pcm.length * 2);
  const v = new DataView(buf);
  v.setUint8(0, opts.kind ?? 2);
  v.setUint8(1, opts.mode);
  v.setUint16(2, text.length, true);
  const id = '12345678-9abc-def0-1234-56789abcdef0'.replace(/-/g, '');
  for (let i = 0; i < 16; i++) v.setUint8(4 + i, parseInt(id.slice(i * 2, i * 2 + 2), 16));
  v.setUint32(20, 3, true);
  v.setUint32(24, 22050, true);
  v.setFloat64(28, 512.25, true);
  new Uint8Array(buf, 36, text.length).set(text);
  opts.pcm.forEach((s, i) => v.setInt16(36 + text.length + i * 2, s, true));
  return buf;
}

describe('binary audio frames', () => {
  it('encodes a microphone frame with the documented 20-byte header', () => {
    const buf = encodeAudioIn(Int16Array.from([1, -2, 32767]), 48000, 7, -1234);
    const v = new DataView(buf);
    expect(buf.byteLength).toBe(20 + 6);
    expect([v.getUint8(0), v.getUint8(1), v.getUint8(2), v.getUint8(3)]).toEqual([1, 0, 0, 0]);
    expect(v.getUint32(4, true)).toBe(48000);
    expect(v.getUint32(8, true)).toBe(7);
    expect(v.getBigInt64(12, true)).toBe(-1234n);
    expect([v.getInt16(20, true), v.getInt16(22, true), v.getInt16(24, true)]).toEqual([1, -2, 32767]);
  });

  it('decodes a reply frame into what a JSON audio_chunk carries', () => {
    const frame = decodeAudioOut(replyFrame({ mode: 1, text: 'héllo', pcm: [16, -16, 0] }));
    expect(frame).toMatchObject({
      turn_id: '12345678-9abc-def0-1234-56789abcdef0', seq: 3, sr: 22050, mode: 'hq', duration_ms: 512.25, text: 'héllo',
    });
    expect(Array.from(frame.pcm)).toEqual([16, -16, 0]);
    expect(decodeAudioOut(replyFrame({ mode: 0, text: '', pcm: [] })).mode).toBe('fast');
  });

  it.each([
    ['short', new ArrayBuffer(35)],
    ['wrong kind', replyFrame({ mode: 0, text: 'a', pcm: [1], kind: 1 })],
    ['unknown mode', replyFrame({ mode: 2, text: 'a', pcm: [1] })],
    ['text past the end', replyFrame({ mode: 0, text: 'abc', pcm: [] }).slice(0, 37)],
    ['odd sample bytes', replyFrame({ mode: 0, text: '', pcm: [1] }).slice(0, 37)],
  ])('refuses a malformed reply frame (%s)', (_name, buf) => {
    expect(() => decodeAudioOut(buf)).toThrow(RangeError);
  });
});
