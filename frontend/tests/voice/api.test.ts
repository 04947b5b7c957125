import { describe, expect, it } from 'vitest';

import { VoiceApiError, VoiceProfilesApi } from '../../src/voice/api';
import { extensionFor, pickMimeType } from '../../src/voice/recorder';

interface Call {
  url: string;
  init?: RequestInit;
}

function recording(respond: (call: Call) => Response) {
  const calls: Call[] = [];
  const fetchFn = async (url: string, init?: RequestInit) => {
    const call = { url, init };
    calls.push(call);
    return respond(call);
  };
  return { calls, fetchFn };
}

const profile = {
  profile_id: '0b8e1a7c-6c61-4b8a-9d0e-3f0d3c1f2a55',
  name: 'Reader',
  duration_sec: 7.1,
  sample_rate: 16000,
  transcript: 'hello',
  created_at: null,
  audio_path: '/api/v1/voice-profiles/0b8e1a7c-6c61-4b8a-9d0e-3f0d3c1f2a55/audio',
  metadata: {},
};

describe('VoiceProfilesApi', () => {
  it('uploads a sample as multipart with name and transcript', async () => {
    const { calls, fetchFn } = recording(() => Response.json(profile, { status: 201 }));
    const api = new VoiceProfilesApi('http://host:8000/', fetchFn);
    const created = await api.create(new Blob([new Uint8Array(8)], { type: 'audio/webm' }), 'Reader', ' hi ', 'a.webm');
    expect(created.profile_id).toBe(profile.profile_id);
    expect(calls[0].url).toBe('http://host:8000/api/v1/voice-profiles');
    expect(calls[0].init?.method).toBe('POST');
    const form = calls[0].init?.body as FormData;
    expect(form.get('name')).toBe('Reader');
    expect(form.get('transcript')).toBe('hi');
    expect((form.get('audio') as File).name).toBe('a.webm');
  });

  it('turns the server error body into a typed error', async () => {
    const body = { error: { code: 'TOO_SHORT', message: 'the sample is 2.0 s long', trace_id: 't-1' } };
    const { fetchFn } = recording(() => Response.json(body, { status: 422 }));
    const api = new VoiceProfilesApi('', fetchFn);
    const err = await api.create(new Blob([]), 'x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VoiceApiError);
    expect((err as VoiceApiError).code).toBe('TOO_SHORT');
    expect((err as VoiceApiError).status).toBe(422);
    expect((err as VoiceApiError).traceId).toBe('t-1');
  });

  it('reads the preview audio and the substitution notice from the headers', async () => {
    const notice = 'piper cannot clone voices; speaking with stock voice joe';
    const { calls, fetchFn } = recording(
      () =>
        new Response(new Uint8Array([82, 73, 70, 70]), {
          headers: {
            'Content-Type': 'audio/wav',
            'X-Voice-Engine': 'piper',
            'X-Voice-Name': 'joe',
            'X-Voice-Mode': 'fast',
            'X-Voice-Notice': encodeURIComponent(notice),
          },
        }),
    );
    const api = new VoiceProfilesApi('', fetchFn);
    const preview = await api.preview(profile.profile_id, 'Hello', 'fast');
    expect(JSON.parse(String(calls[0].init?.body))).toEqual({ text: 'Hello', mode: 'fast' });
    expect(preview.engine).toBe('piper');
    expect(preview.notice).toBe(notice);
    expect(preview.audio.size).toBe(4);
  });

  it('lists, deletes and searches', async () => {
    const { calls, fetchFn } = recording(({ url, init }) => {
      if (url.endsWith('/search')) return Response.json({ results: [{ profile, similarity: 0.93 }] });
      if (init?.method === 'DELETE') return Response.json({ profile_id: profile.profile_id, deleted_objects: 2 });
      return Response.json({ profiles: [profile] });
    });
    const api = new VoiceProfilesApi('', fetchFn);
    expect(await api.list()).toHaveLength(1);
    expect(await api.remove(profile.profile_id)).toBe(2);
    const hits = await api.search(new Blob([new Uint8Array(4)]), 3);
    expect(hits[0].similarity).toBeCloseTo(0.93);
    expect((calls[2].init?.body as FormData).get('limit')).toBe('3');
    expect(api.audioUrl(profile)).toBe(profile.audio_path);
  });

  it('reports a network failure', async () => {
    const api = new VoiceProfilesApi('', async () => {
      throw new TypeError('Failed to fetch');
    });
    await expect(api.list()).rejects.toMatchObject({ code: 'NETWORK', status: 0 });
  });
});

describe('recorder helpers', () => {
  it('prefers webm/opus and names files so the server can decode them', () => {
    expect(pickMimeType((t) => t.startsWith('audio/ogg'))).toBe('audio/ogg;codecs=opus');
    expect(pickMimeType(() => false)).toBeUndefined();
    expect(extensionFor('audio/webm;codecs=opus')).toBe('webm');
    expect(extensionFor('audio/ogg;codecs=opus')).toBe('ogg');
  });
});
