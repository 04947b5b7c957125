/** Typed client for the voice-profile REST API (`/api/v1/voice-profiles`, docs/design-notes.md §4, §6). */

import { withCsrf } from '../protocol/auth';

export interface VoiceProfile {
  profile_id: string;
  name: string;
  duration_sec: number;
  sample_rate: number;
  transcript: string;
  created_at: string | null;
  /** Path (relative to the API base) of the stored sample as WAV. */
  audio_path: string;
  metadata: Record<string, unknown>;
}

export interface SimilarVoice {
  profile: VoiceProfile;
  /** Cosine similarity of the speaker embeddings, -1..1 (same speaker is typically > 0.8). */
  similarity: number;
}

export interface VoicePreview {
  audio: Blob;
  engine: string;
  voice: string;
  mode: string;
  /** Set when the voice could not be cloned and a stock voice was used instead (or the tier degraded). */
  notice: string | null;
}

export type PreviewMode = 'fast' | 'hq';

/** A failed call, with the server's `{"error": {code, message, trace_id}}` when it sent one. */
export class VoiceApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly traceId: string | null = null,
  ) {
    super(message);
    this.name = 'VoiceApiError';
  }
}

/** Sample limits the server enforces; the UI checks them first to give faster feedback. */
export const SAMPLE_LIMITS = { minSeconds: 5, maxSeconds: 30, maxBytes: 10 * 1024 * 1024 } as const;

type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

async function failure(res: Response): Promise<VoiceApiError> {
  const body: unknown = await res.json().catch(() => null);
  const err = (body as { error?: { code?: unknown; message?: unknown; trace_id?: unknown } } | null)?.error;
  if (err && typeof err.code === 'string') {
    return new VoiceApiError(
      res.status,
      err.code,
      typeof err.message === 'string' ? err.message : res.statusText,
      typeof err.trace_id === 'string' ? err.trace_id : null,
    );
  }
  return new VoiceApiError(res.status, 'HTTP_' + res.status, res.statusText || 'request failed');
}

function header(res: Response, name: string): string | null {
  const raw = res.headers.get(name);
  if (raw === null) return null;
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** The voice-profile endpoints under one API base (e.g. `''` for same origin). */
export class VoiceProfilesApi {
  private readonly root: string;

  constructor(
    readonly apiBase: string,
    private readonly fetchFn: FetchLike = (input, init) => fetch(input, init),
  ) {
    this.root = `${apiBase.replace(/\/$/, '')}/api/v1/voice-profiles`;
  }

  private async call(path: string, init?: RequestInit): Promise<Response> {
    let res: Response;
    try {
      res = await this.fetchFn(`${this.root}${path}`, withCsrf(init));
    } catch (err) {
      throw new VoiceApiError(0, 'NETWORK', err instanceof Error ? err.message : String(err));
    }
    if (!res.ok) throw await failure(res);
    return res;
  }

  async list(): Promise<VoiceProfile[]> {
    const res = await this.call('', { headers: { Accept: 'application/json' } });
    const body = (await res.json()) as { profiles: VoiceProfile[] };
    return body.profiles;
  }

  async get(profileId: string): Promise<VoiceProfile> {
    const res = await this.call(`/${encodeURIComponent(profileId)}`);
    return (await res.json()) as VoiceProfile;
  }

  async create(audio: Blob, name: string, transcript?: string, filename = 'sample'): Promise<VoiceProfile> {
    const form = new FormData();
    form.append('audio', audio, filename);
    form.append('name', name);
    if (transcript && transcript.trim()) form.append('transcript', transcript.trim());
    const res = await this.call('', { method: 'POST', body: form });
    return (await res.json()) as VoiceProfile;
  }

  async remove(profileId: string): Promise<number> {
    const res = await this.call(`/${encodeURIComponent(profileId)}`, { method: 'DELETE' });
    const body = (await res.json()) as { deleted_objects: number };
    return body.deleted_objects;
  }

  async preview(profileId: string, text: string, mode: PreviewMode = 'hq'): Promise<VoicePreview> {
    const res = await this.call(`/${encodeURIComponent(profileId)}/preview`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'audio/wav' },
      body: JSON.stringify({ text, mode }),
    });
    return {
      audio: await res.blob(),
      engine: header(res, 'X-Voice-Engine') ?? '',
      voice: header(res, 'X-Voice-Name') ?? '',
      mode: header(res, 'X-Voice-Mode') ?? mode,
      notice: header(res, 'X-Voice-Notice'),
    };
  }

  async search(audio: Blob, limit = 5, filename = 'query'): Promise<SimilarVoice[]> {
    const form = new FormData();
    form.append('audio', audio, filename);
    form.append('limit', String(limit));
    const res = await this.call('/search', { method: 'POST', body: form });
    const body = (await res.json()) as { results: SimilarVoice[] };
    return body.results;
  }

  audioUrl(profile: VoiceProfile): string {
    return `${this.apiBase.replace(/\/$/, '')}${profile.audio_path}`;
  }
}
