/**
 * Messages of the avatar control stream `WS /ws/{session_id}/avatar` (docs/avatar-control.md).
 * The same events drive VTube Studio through the server's bridge, so the page shows what the
 * model shows.
 */

export type AvatarState = 'listening' | 'thinking' | 'speaking';
export type Vowel = 'A' | 'I' | 'U' | 'E' | 'O';

export interface ParameterSpec {
  name: string;
  min: number;
  max: number;
  default: number;
  explanation: string;
}

export interface HelloEvent {
  type: 'hello';
  protocol_version: number;
  session_id: string;
  state: AvatarState;
  frame_ms: number;
  parameters: ParameterSpec[];
}
export interface StateEvent { type: 'state'; session_id: string; state: AvatarState; t_ms: number }
export interface MouthFrame { offset_ms: number; open: number; vowel: Vowel | null }
export interface MouthEvent {
  type: 'mouth';
  turn_id: string;
  seq: number;
  chunk_offset_ms: number;
  duration_ms: number;
  frame_ms: number;
  source: 'level' | 'phonemes';
  frames: MouthFrame[];
}
export interface ExpressionEvent {
  type: 'expression';
  turn_id: string | null;
  emotion: string;
  parameters: Record<string, number>;
  transition_ms: number;
  hotkey: string | null;
}
export interface IdleEvent { type: 'idle'; active: boolean; parameters: Record<string, number>; transition_ms: number }
export interface InterruptedEvent { type: 'interrupted'; turn_id: string }
export interface AvatarErrorEvent { type: 'error'; code: string; message: string }
export interface PongEvent { type: 'pong'; t: number | null }

export type AvatarEvent =
  | HelloEvent | StateEvent | MouthEvent | ExpressionEvent | IdleEvent | InterruptedEvent | AvatarErrorEvent
  | PongEvent;

const TYPES = new Set(['hello', 'state', 'mouth', 'expression', 'idle', 'interrupted', 'error', 'pong']);

/** Parses one stream message; `null` for anything that is not a known, well-formed event. */
export function parseAvatarEvent(raw: string): AvatarEvent | null {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const m = value as Record<string, unknown>;
  if (typeof m.type !== 'string' || !TYPES.has(m.type)) return null;
  switch (m.type) {
    case 'mouth':
      if (typeof m.turn_id !== 'string' || typeof m.seq !== 'number' || !Array.isArray(m.frames)) return null;
      break;
    case 'expression':
    case 'idle':
      if (typeof m.parameters !== 'object' || m.parameters === null || typeof m.transition_ms !== 'number') {
        return null;
      }
      break;
    case 'interrupted':
      if (typeof m.turn_id !== 'string') return null;
      break;
    case 'state':
    case 'hello':
      if (typeof m.state !== 'string') return null;
      break;
    default:
      break;
  }
  return value as AvatarEvent;
}

export function avatarSocketUrl(loc: { protocol: string; host: string }, sessionId: string, token: string): string {
  const scheme = loc.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${loc.host}/ws/${encodeURIComponent(sessionId)}/avatar?token=${encodeURIComponent(token)}`;
}
