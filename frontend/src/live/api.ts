/**
 * The director console's REST calls (docs/live.md, "Director console"). The web app is signed in
 * as an admin, so the cookie (and the CSRF header that `request` adds) is the credential; no live
 * key is pasted anywhere.
 */
import { request } from '../protocol/api';

export interface LivePlatform {
  platform: string;
  state: string;
  connects: number;
  running: boolean;
}

export interface LiveStatus {
  platforms: LivePlatform[];
  queued: number;
  paused: boolean;
  replies: number;
}

/** A chat message with the filters' verdict and what became of it. */
export interface LiveMessage {
  id: number;
  platform: string;
  userId: string;
  user: string;
  text: string;
  amount: number;
  isStreamer: boolean;
  verdict: string | null;
  status: string;
  reason: string | null;
  turnId: string | null;
}

export interface LiveReply {
  id: number;
  turnId: string | null;
  toUser: string;
  text: string;
  emotion: string;
}

/** The VTube Studio bridge's connection as the console shows it (docs/avatar-control.md). */
export interface AvatarControl {
  enabled: boolean;
  state: string;
  connected: boolean;
  modelName: string;
  lastError: string;
  followsLive: boolean;
}

export const EMOTIONS = ['neutral', 'happy', 'sad', 'angry', 'surprised', 'excited'] as const;
export type SayEmotion = (typeof EMOTIONS)[number];

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v && typeof v === 'object' ? (v as Obj) : {});
const arr = (v: unknown): Obj[] => (Array.isArray(v) ? v.map(obj) : []);
const str = (v: unknown, d = ''): string => (typeof v === 'string' ? v : d);
const strOrNull = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

export function parseStatus(body: unknown): LiveStatus {
  const o = obj(body);
  return {
    platforms: arr(o.platforms).map((p) => ({
      platform: str(p.platform), state: str(p.state, 'stopped'), connects: num(p.connects), running: p.running === true,
    })),
    queued: num(o.queued),
    paused: o.paused === true,
    replies: num(o.replies),
  };
}

export function parseQueue(body: unknown): LiveMessage[] {
  return arr(obj(body).messages).map((m) => ({
    id: num(m.id), platform: str(m.platform), userId: str(m.user_id), user: str(m.user), text: str(m.text),
    amount: num(m.amount), isStreamer: m.is_streamer === true, verdict: strOrNull(m.verdict),
    status: str(m.status), reason: strOrNull(m.reason), turnId: strOrNull(m.turn_id),
  }));
}

export function parseReplies(body: unknown): LiveReply[] {
  return arr(obj(body).replies).map((r) => ({
    id: num(r.id), turnId: strOrNull(r.turn_id), toUser: str(r.to_user), text: str(r.text), emotion: str(r.emotion, 'neutral'),
  }));
}

export function parseAvatar(body: unknown): AvatarControl {
  const o = obj(body);
  return {
    enabled: o.enabled === true, state: str(o.state, 'off'), connected: o.connected === true,
    modelName: str(o.model_name), lastError: str(o.last_error), followsLive: o.follows_live === true,
  };
}

const post = (body?: unknown): RequestInit => ({
  method: 'POST',
  headers: { 'Content-Type': 'application/json' },
  body: body === undefined ? undefined : JSON.stringify(body),
});

export class LiveApi {
  constructor(readonly base: string = '') {}

  private call(path: string, init?: RequestInit): Promise<unknown> {
    return request(this.base, `/api/v1/live${path}`, init);
  }

  async status(): Promise<LiveStatus> {
    return parseStatus(await this.call('/status'));
  }

  async queue(): Promise<LiveMessage[]> {
    return parseQueue(await this.call('/queue'));
  }

  async replies(): Promise<LiveReply[]> {
    return parseReplies(await this.call('/replies'));
  }

  async avatar(): Promise<AvatarControl> {
    return parseAvatar(await this.call('/avatar'));
  }

  async pause(paused: boolean): Promise<void> {
    await this.call('/pause', post({ paused }));
  }

  async connect(platform: string, on: boolean): Promise<void> {
    await this.call(`/platforms/${encodeURIComponent(platform)}/${on ? 'connect' : 'disconnect'}`, post());
  }

  async answer(id: number): Promise<void> {
    await this.call(`/queue/${id}/answer`, post());
  }

  async skip(id: number): Promise<void> {
    await this.call(`/queue/${id}/skip`, post());
  }

  async ban(platform: string, userId: string): Promise<void> {
    await this.call('/ban', post({ platform, user_id: userId }));
  }

  async say(text: string, emotion: SayEmotion): Promise<void> {
    await this.call('/say', post({ text, emotion }));
  }
}
