/**
 * Binary audio frames (docs/protocol.md, "Binary audio frames"): asked for with `?audio=binary`,
 * confirmed by `session_state.audio_frames === 'binary'`. All integers little-endian.
 */
import type { TtsMode } from './messages';

export const KIND_AUDIO_IN = 0x01;
export const KIND_AUDIO_OUT = 0x02;
export const AUDIO_IN_HEADER_BYTES = 20;
export const AUDIO_OUT_HEADER_BYTES = 36;

/** One reply audio frame: what a JSON `audio_chunk` carries, with the samples decoded. */
export interface AudioFrame {
  turn_id: string;
  seq: number;
  sr: number;
  mode: TtsMode;
  duration_ms: number;
  text: string;
  pcm: Int16Array;
}

/** Microphone PCM16 as one binary frame: kind, 3 zero bytes, rate, sequence, timestamp (ms). */
export function encodeAudioIn(pcm: Int16Array, sampleRate: number, seq: number, timestampMs: number): ArrayBuffer {
  const out = new ArrayBuffer(AUDIO_IN_HEADER_BYTES + pcm.length * 2);
  const view = new DataView(out);
  view.setUint8(0, KIND_AUDIO_IN);
  view.setUint32(4, sampleRate, true);
  view.setUint32(8, seq >>> 0, true);
  view.setBigInt64(12, BigInt(Math.trunc(timestampMs)), true);
  for (let i = 0; i < pcm.length; i++) view.setInt16(AUDIO_IN_HEADER_BYTES + i * 2, pcm[i], true);
  return out;
}

function uuidOf(bytes: Uint8Array): string {
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A reply audio frame from the server; throws RangeError for anything malformed. */
export function decodeAudioOut(buf: ArrayBuffer): AudioFrame {
  if (buf.byteLength < AUDIO_OUT_HEADER_BYTES) throw new RangeError('a reply audio frame is shorter than its header');
  const view = new DataView(buf);
  if (view.getUint8(0) !== KIND_AUDIO_OUT) throw new RangeError(`unknown binary frame kind ${view.getUint8(0)}`);
  const modeByte = view.getUint8(1);
  if (modeByte > 1) throw new RangeError(`unknown mode ${modeByte}`);
  const textBytes = view.getUint16(2, true);
  const pcmStart = AUDIO_OUT_HEADER_BYTES + textBytes;
  if (buf.byteLength < pcmStart || (buf.byteLength - pcmStart) % 2 !== 0) {
    throw new RangeError('a reply audio frame has a bad length');
  }
  const pcm = new Int16Array((buf.byteLength - pcmStart) / 2);
  for (let i = 0; i < pcm.length; i++) pcm[i] = view.getInt16(pcmStart + i * 2, true);
  return {
    turn_id: uuidOf(new Uint8Array(buf, 4, 16)),
    seq: view.getUint32(20, true),
    sr: view.getUint32(24, true),
    mode: modeByte === 0 ? 'fast' : 'hq',
    duration_ms: view.getFloat64(28, true),
    text: new TextDecoder().decode(new Uint8Array(buf, AUDIO_OUT_HEADER_BYTES, textBytes)),
    pcm,
  };
}
