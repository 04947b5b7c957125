/**
 * Parameter values of the avatar at any moment, from the avatar events: the browser's version of
 * the server's `AvatarAnimator` (docs/avatar-control.md, "Parameters"). Times are seconds on the
 * playback AudioContext's clock, so mouth frames line up with the audio actually playing.
 *
 * Mouth frames are placed at the start time the PlaybackQueue gave their audio chunk
 * (`chunkStarted(turn, seq, start)`); a mouth event that arrives before its chunk waits for it.
 */
import type { AvatarEvent, MouthEvent, Vowel } from './events';

export const DEFAULTS: Record<string, number> = {
  AvatarMouthOpen: 0, AvatarVowelA: 0, AvatarVowelI: 0, AvatarVowelU: 0, AvatarVowelE: 0, AvatarVowelO: 0,
  AvatarHeadX: 0, AvatarHeadY: 0, AvatarHeadZ: 0, AvatarEyeX: 0, AvatarEyeY: 0, AvatarSmile: 0,
  AvatarBrows: 0, AvatarEyeOpen: 1,
};
const RANGES: Record<string, [number, number]> = {
  AvatarMouthOpen: [0, 1], AvatarVowelA: [0, 1], AvatarVowelI: [0, 1], AvatarVowelU: [0, 1],
  AvatarVowelE: [0, 1], AvatarVowelO: [0, 1], AvatarHeadX: [-30, 30], AvatarHeadY: [-30, 30],
  AvatarHeadZ: [-30, 30], AvatarEyeX: [-1, 1], AvatarEyeY: [-1, 1], AvatarSmile: [-1, 1],
  AvatarBrows: [-1, 1], AvatarEyeOpen: [0, 1],
};

interface Tween { start: Record<string, number>; target: Record<string, number>; t0: number; duration: number }

function tweenAt(t: Tween, now: number): Record<string, number> {
  const k = t.duration <= 0 ? 1 : Math.min(1, Math.max(0, (now - t.t0) / t.duration));
  const out: Record<string, number> = {};
  for (const [name, value] of Object.entries(t.target)) {
    const from = t.start[name] ?? DEFAULTS[name] ?? 0;
    out[name] = from * (1 - k) + value * k;
  }
  return out;
}

function known(params: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(params)) if (k in RANGES && Number.isFinite(v)) out[k] = v;
  return out;
}

interface Frame { at: number; open: number; vowel: Vowel | null; turnId: string }

export class AvatarAnimator {
  state = 'listening';
  emotion = 'neutral';
  private frames: Frame[] = [];
  private frameS = 0.02;
  private expression: Tween | null = null;
  private idle: Tween | null = null;
  private readonly chunkStarts = new Map<string, number>();
  private readonly pending = new Map<string, MouthEvent>();
  private readonly cut = new Set<string>();

  /** The PlaybackQueue scheduled chunk `seq` of `turnId` to start at `start` (seconds). */
  chunkStarted(turnId: string, seq: number, start: number): void {
    const key = `${turnId}:${seq}`;
    this.chunkStarts.set(key, start);
    const waiting = this.pending.get(key);
    if (waiting) {
      this.pending.delete(key);
      this.place(waiting, start);
    }
    if (this.chunkStarts.size > 2000) this.chunkStarts.clear();
  }

  /** Local playback stopped (barge-in or a dropped connection): close the mouth now. */
  stopTurn(turnId: string | null): void {
    if (turnId) this.cut.add(turnId);
    this.frames = turnId ? this.frames.filter((f) => f.turnId !== turnId) : [];
  }

  apply(event: AvatarEvent, now: number): void {
    switch (event.type) {
      case 'hello':
      case 'state':
        this.state = event.state;
        break;
      case 'mouth': {
        if (this.cut.has(event.turn_id)) break;
        this.frameS = event.frame_ms / 1000;
        const start = this.chunkStarts.get(`${event.turn_id}:${event.seq}`);
        if (start === undefined) this.pending.set(`${event.turn_id}:${event.seq}`, event);
        else this.place(event, start);
        break;
      }
      case 'interrupted':
        this.stopTurn(event.turn_id);
        for (const key of [...this.pending.keys()]) if (key.startsWith(`${event.turn_id}:`)) this.pending.delete(key);
        break;
      case 'expression':
        this.emotion = event.emotion;
        this.expression = {
          start: this.expression ? tweenAt(this.expression, now) : {}, target: known(event.parameters), t0: now,
          duration: event.transition_ms / 1000,
        };
        break;
      case 'idle':
        this.idle = {
          start: this.idle ? tweenAt(this.idle, now) : {}, target: known(event.parameters), t0: now,
          duration: event.transition_ms / 1000,
        };
        break;
      default:
        break;
    }
  }

  private place(event: MouthEvent, start: number): void {
    for (const f of event.frames) {
      this.frames.push({ at: start + f.offset_ms / 1000, open: f.open, vowel: f.vowel, turnId: event.turn_id });
    }
    this.frames.sort((a, b) => a.at - b.at);
  }

  /** Whether mouth frames are playing or queued. */
  speaking(now: number): boolean {
    return this.frames.length > 0 && this.frames[this.frames.length - 1].at + this.frameS > now;
  }

  values(now: number): Record<string, number> {
    const v: Record<string, number> = { ...DEFAULTS };
    if (this.expression) Object.assign(v, tweenAt(this.expression, now));
    if (this.idle) for (const [k, x] of Object.entries(tweenAt(this.idle, now))) v[k] = (v[k] ?? 0) + x;
    while (this.frames.length > 1 && this.frames[1].at <= now) this.frames.shift();
    if (this.frames.length > 0 && this.frames[0].at + this.frameS <= now) this.frames.shift();
    const cur = this.frames.length > 0 && this.frames[0].at <= now ? this.frames[0] : null;
    v.AvatarMouthOpen = cur ? cur.open : 0;
    for (const vowel of ['A', 'I', 'U', 'E', 'O'] as const) v[`AvatarVowel${vowel}`] = cur && cur.vowel === vowel ? cur.open : 0;
    for (const [k, [lo, hi]] of Object.entries(RANGES)) v[k] = Math.min(hi, Math.max(lo, v[k]));
    return v;
  }
}
