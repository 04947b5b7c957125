/** REST client for the orchestrator (docs/protocol.md, docs/design-notes.md §6). */

import { withCsrf } from './auth';

export interface SessionCreated {
  session_id: string;
  ws_url: string;
  token: string;
}

export interface SessionSummary {
  session_id: string;
  start_time: string | null;
  status: string;
  turns: number | null;
}

export interface TurnRecord {
  turn_id: string;
  turn_number: number;
  user_input: string;
  ai_response: string;
  emotion: string | null;
  created_at: string | null;
}

export interface ProsodyPoint {
  transcription_id: string | null;
  turn_number: number | null;
  confidence: number;
  stability: number;
  affability: number;
  reliable: boolean;
  analyzed_at: string | null;
}

/** A failed request with the server's `{"error":{code,message,trace_id}}` body when it had one. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly traceId: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

type Obj = Record<string, unknown>;

/** A JSON request with the CSRF header added; throws `ApiError` with the server's error body. */
export async function request(base: string, path: string, init?: RequestInit): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, withCsrf({ ...init, headers: { Accept: 'application/json', ...(init?.headers ?? {}) } }));
  } catch (err) {
    throw new ApiError(0, 'NETWORK', err instanceof Error ? err.message : String(err));
  }
  const body: unknown = await res.json().catch(() => null);
  if (!res.ok) {
    const e = (body as Obj | null)?.error as Obj | undefined;
    throw new ApiError(
      res.status,
      typeof e?.code === 'string' ? e.code : `HTTP_${res.status}`,
      typeof e?.message === 'string' ? e.message : res.statusText,
      typeof e?.trace_id === 'string' ? e.trace_id : null,
    );
  }
  return body;
}

/** Accepts a bare array or an envelope (`{items|sessions|turns|points: [...]}`). */
export function listOf(body: unknown, ...keys: string[]): Obj[] {
  if (Array.isArray(body)) return body.filter((x): x is Obj => typeof x === 'object' && x !== null);
  if (body && typeof body === 'object') {
    for (const k of [...keys, 'items', 'data']) {
      const v = (body as Obj)[k];
      if (Array.isArray(v)) return listOf(v);
    }
  }
  return [];
}

const s = (v: unknown): string | null => (typeof v === 'string' ? v : v == null ? null : String(v));
const n = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

export function parseSessions(body: unknown): SessionSummary[] {
  return listOf(body, 'sessions').map((o) => ({
    session_id: s(o.session_id ?? o.id) ?? '',
    start_time: s(o.start_time ?? o.created_at),
    status: s(o.status) ?? 'active',
    turns: n(o.turns ?? o.turn_count),
  })).filter((x) => x.session_id !== '');
}

export function parseTurns(body: unknown): TurnRecord[] {
  return listOf(body, 'turns').map((o) => ({
    turn_id: s(o.turn_id ?? o.id) ?? '',
    turn_number: n(o.turn_number) ?? 0,
    user_input: s(o.user_input) ?? '',
    ai_response: s(o.ai_response) ?? '',
    emotion: s(o.emotion),
    created_at: s(o.created_at),
  })).sort((a, b) => a.turn_number - b.turn_number);
}

export function parseProsody(body: unknown): ProsodyPoint[] {
  return listOf(body, 'points', 'scores', 'trend').flatMap((o) => {
    const sc = (o.scores && typeof o.scores === 'object' ? o.scores : o) as Obj;
    const c = n(sc.confidence), st = n(sc.stability), a = n(sc.affability);
    if (c === null || st === null || a === null) return [];
    return [{
      transcription_id: s(o.transcription_id), turn_number: n(o.turn_number ?? o.index),
      confidence: c, stability: st, affability: a,
      reliable: typeof o.reliable === 'boolean' ? o.reliable : true,
      analyzed_at: s(o.analyzed_at ?? o.created_at),
    }];
  });
}

/** The VTube Studio bridge's state from `/api/v1/health` (docs/avatar-control.md). */
export interface VtsStatus {
  state: string;
  connected: boolean;
  authenticated: boolean;
  modelLoaded: boolean;
  lastError: string;
}

/** A thumbs up/down on one reply (docs/live.md, "Feedback"). */
export type Rating = 'up' | 'down';

export class ApiClient {
  constructor(readonly base: string = '') {}

  /** Rate a reply (again: the last rating wins); the comment is optional. */
  async rateTurn(turnId: string, rating: Rating, comment = ''): Promise<void> {
    await request(this.base, `/api/v1/turns/${encodeURIComponent(turnId)}/feedback`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ rating, comment }),
    });
  }

  /** `null` when the bridge is not enabled; the health answer is read even when degraded (503). */
  async vtubeStudio(): Promise<VtsStatus | null> {
    let body: unknown;
    try {
      const res = await fetch(`${this.base}/api/v1/health`, { headers: { Accept: 'application/json' } });
      body = await res.json();
    } catch (err) {
      throw new ApiError(0, 'NETWORK', err instanceof Error ? err.message : String(err));
    }
    const vts = ((body as Obj | null)?.services as Obj | undefined)?.vtube_studio as Obj | undefined;
    if (!vts || typeof vts.state !== 'string') return null;
    return {
      state: vts.state, connected: vts.connected === true, authenticated: vts.authenticated === true,
      modelLoaded: vts.model_loaded === true, lastError: typeof vts.last_error === 'string' ? vts.last_error : '',
    };
  }

  async createSession(): Promise<SessionCreated> {
    const body = (await request(this.base, '/api/v1/sessions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: '{}',
    })) as Obj;
    if (typeof body?.session_id !== 'string' || typeof body?.token !== 'string') {
      throw new ApiError(200, 'BAD_RESPONSE', 'the server did not return a session');
    }
    return { session_id: body.session_id, token: body.token, ws_url: s(body.ws_url) ?? '' };
  }

  async sessions(): Promise<SessionSummary[]> {
    return parseSessions(await request(this.base, '/api/v1/sessions'));
  }

  async turns(sessionId: string): Promise<TurnRecord[]> {
    return parseTurns(await request(this.base, `/api/v1/sessions/${encodeURIComponent(sessionId)}/turns`));
  }

  /** The prosody trend of a session, or null when the server has no prosody endpoint. */
  async prosody(sessionId: string): Promise<ProsodyPoint[] | null> {
    try {
      return parseProsody(await request(this.base, `/api/v1/sessions/${encodeURIComponent(sessionId)}/prosody`));
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 405)) return null;
      throw err;
    }
  }
}
