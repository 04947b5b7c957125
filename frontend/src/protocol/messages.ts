/** Protocol v1 message types (docs/protocol.md) and validation of what the server sends. */

import type { Emotion, Phase, ServerMessage, TTSMode } from './generated';

// The message types are generated from the backend's models (generated.ts, `make protocol`);
// this module re-exports them under the names the app uses and validates what the server sends.
export type {
  AudioChunkMsg, ClientMessage, Emotion, EmotionMsg, ErrorMsg, HeartbeatMsg, HqReadyMsg, InterruptedMsg,
  LlmTokenMsg, NoticeMsg, PongMsg, ProsodyAnalysisMsg, ServerMessage, SessionStateMsg, SpeechStartedMsg,
  TranscriptionFinalMsg, TranscriptionPartialMsg, TurnCompletedMsg, TurnStartedMsg,
} from './generated';
export type TtsMode = TTSMode;
export type ConversationState = Phase;

export const PROTOCOL_VERSION = 1;

export const EMOTIONS = ['happy', 'sad', 'angry', 'surprised', 'neutral', 'excited'] as const satisfies readonly Emotion[];

/** Thrown for a frame that is not a valid v1 server message; `reason` says what is wrong. */
export class ProtocolError extends Error {
  constructor(readonly reason: string) {
    super(`invalid server message: ${reason}`);
    this.name = 'ProtocolError';
  }
}

type Obj = Record<string, unknown>;

function str(o: Obj, key: string): string {
  const v = o[key];
  if (typeof v !== 'string') throw new ProtocolError(`${String(o.type)}.${key} must be a string`);
  return v;
}
function optStr(o: Obj, key: string): string | null {
  const v = o[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string') throw new ProtocolError(`${String(o.type)}.${key} must be a string`);
  return v;
}
function num(o: Obj, key: string, fallback?: number): number {
  const v = o[key];
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ProtocolError(`${String(o.type)}.${key} must be a number`);
  return v;
}
function bool(o: Obj, key: string, fallback = false): boolean {
  const v = o[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') throw new ProtocolError(`${String(o.type)}.${key} must be a boolean`);
  return v;
}
function emotion(o: Obj, key: string): Emotion {
  const v = o[key];
  return typeof v === 'string' && (EMOTIONS as readonly string[]).includes(v) ? (v as Emotion) : 'neutral';
}
function mode(o: Obj, key: string): TtsMode {
  const v = o[key] ?? 'fast';
  if (v !== 'fast' && v !== 'hq') throw new ProtocolError(`${String(o.type)}.${key} must be fast or hq`);
  return v;
}

/**
 * Parses and validates one text frame. Unknown emotions degrade to `neutral` (the avatar must
 * not break on a new label); structural errors throw {@link ProtocolError}.
 */
export function parseServerMessage(raw: string): ServerMessage {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new ProtocolError('not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ProtocolError('not an object');
  const o = value as Obj;
  const type = o.type;
  switch (type) {
    case 'session_state': {
      const state = o.state;
      if (state !== 'listening' && state !== 'thinking' && state !== 'speaking') {
        throw new ProtocolError('session_state.state must be listening, thinking or speaking');
      }
      return {
        type, state, session_id: str(o, 'session_id'), resumed: bool(o, 'resumed'),
        turns: num(o, 'turns', 0), tts_mode: mode(o, 'tts_mode'), voice: optStr(o, 'voice'),
        voice_profile_id: optStr(o, 'voice_profile_id'), protocol_version: num(o, 'protocol_version', PROTOCOL_VERSION),
        ...(o.audio_frames === 'binary' ? { audio_frames: 'binary' as const } : {}),
      };
    }
    case 'speech_started':
      return { type, timestamp: num(o, 'timestamp', 0) };
    case 'transcription_partial':
      return { type, text: str(o, 'text'), confidence: num(o, 'confidence', 0), is_final: false, language: optStr(o, 'language') };
    case 'transcription_final':
      return {
        type, transcription_id: str(o, 'transcription_id'), text: str(o, 'text'), confidence: num(o, 'confidence', 0),
        is_final: true, language: optStr(o, 'language'), low_confidence: bool(o, 'low_confidence'),
        latency_ms: num(o, 'latency_ms', 0),
      };
    case 'turn_started':
      return { type, turn_id: str(o, 'turn_id'), turn_number: num(o, 'turn_number', 0) };
    case 'emotion':
      return { type, turn_id: str(o, 'turn_id'), emotion: emotion(o, 'emotion') };
    case 'llm_token':
      return { type, turn_id: str(o, 'turn_id'), token: str(o, 'token') };
    case 'audio_chunk': {
      const sr = num(o, 'sr');
      if (sr < 8000 || sr > 48000) throw new ProtocolError('audio_chunk.sr must be 8000-48000');
      const data = str(o, 'data');
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(data) || data.length % 4 !== 0) throw new ProtocolError('audio_chunk.data must be base64');
      return {
        type, turn_id: str(o, 'turn_id'), data, sr, mode: mode(o, 'mode'), seq: num(o, 'seq', 0),
        duration_ms: num(o, 'duration_ms', 0), text: optStr(o, 'text') ?? '',
      };
    }
    case 'turn_completed': {
      const lat = o.latency_ms;
      const latency: Record<string, number> = {};
      if (lat && typeof lat === 'object') {
        for (const [k, v] of Object.entries(lat as Obj)) if (typeof v === 'number') latency[k] = v;
      }
      return {
        type, turn_id: str(o, 'turn_id'), text: optStr(o, 'text') ?? '', emotion: emotion(o, 'emotion'),
        interrupted: bool(o, 'interrupted'), latency_ms: latency,
      };
    }
    case 'interrupted':
      return { type, turn_id: str(o, 'turn_id'), heard_text: optStr(o, 'heard_text') ?? '' };
    case 'hq_ready':
      return {
        type, turn_id: str(o, 'turn_id'), url: str(o, 'url'), duration_ms: num(o, 'duration_ms', 0),
        notice: optStr(o, 'notice'),
      };
    case 'prosody_analysis': {
      const s = o.scores;
      if (!s || typeof s !== 'object') throw new ProtocolError('prosody_analysis.scores must be an object');
      const so = { ...(s as Obj), type } as Obj;
      return {
        type, transcription_id: str(o, 'transcription_id'),
        scores: { confidence: num(so, 'confidence'), stability: num(so, 'stability'), affability: num(so, 'affability') },
        reliable: bool(o, 'reliable', true), reason: optStr(o, 'reason'),
      };
    }
    case 'notice':
      return { type, code: str(o, 'code'), message: str(o, 'message'), turn_id: optStr(o, 'turn_id') };
    case 'error':
      return { type, code: str(o, 'code'), message: str(o, 'message'), trace_id: optStr(o, 'trace_id') ?? '' };
    case 'pong':
    case 'heartbeat':
      return { type, t: num(o, 't', 0) };
    default:
      throw new ProtocolError(typeof type === 'string' ? `unknown type ${type}` : 'missing type');
  }
}
