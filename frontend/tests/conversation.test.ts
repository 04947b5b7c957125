import { describe, expect, it } from 'vitest';
import { Conversation } from '../src/conversation';
import { ApiClient } from '../src/protocol/api';
import { parseServerMessage } from '../src/protocol/messages';

const feed = (c: Conversation, ...msgs: object[]) => {
  for (const m of msgs) c.onMessage(parseServerMessage(JSON.stringify(m)));
};

describe('Conversation message handling', () => {
  it('builds a turn from partial -> final -> streamed reply -> completion', () => {
    const c = new Conversation(new ApiClient(''));
    let renders = 0;
    c.subscribe(() => renders++);
    feed(c,
      { type: 'session_state', session_id: 's1', state: 'listening', resumed: false, turns: 0, tts_mode: 'fast', voice: null, protocol_version: 1 },
      { type: 'transcription_partial', text: 'hello the', confidence: 0.4, is_final: false, language: 'en' });
    expect(c.getSnapshot().partial).toBe('hello the');
    feed(c,
      { type: 'transcription_final', transcription_id: 'x', text: 'hello there', confidence: 0.9, is_final: true, language: 'en', low_confidence: true, latency_ms: 200 },
      { type: 'turn_started', turn_id: 'u1', turn_number: 1 },
      { type: 'emotion', turn_id: 'u1', emotion: 'happy' },
      { type: 'llm_token', turn_id: 'u1', token: 'Hi' },
      { type: 'llm_token', turn_id: 'u1', token: ' you!' });
    let s = c.getSnapshot();
    expect(s.partial).toBe('');
    expect(s.emotion).toBe('happy');
    expect(s.turns).toHaveLength(1);
    expect(s.turns[0]).toMatchObject({ turnId: 'u1', user: 'hello there', ai: 'Hi you!', lowConfidence: true, done: false });
    feed(c,
      { type: 'turn_completed', turn_id: 'u1', text: 'Hi you!', emotion: 'excited', interrupted: false, latency_ms: {} },
      { type: 'hq_ready', turn_id: 'u1', url: '/x.wav', duration_ms: 800 });
    s = c.getSnapshot();
    expect(s.turns[0]).toMatchObject({ done: true, emotion: 'excited', hqUrl: '/x.wav' });
    expect(renders).toBeGreaterThan(5);
  });

  it('shows server errors and notices, and falls back to fast mode on VRAM exhaustion', () => {
    const c = new Conversation(new ApiClient(''));
    c.setTtsMode('hq');
    feed(c,
      { type: 'error', code: 'VRAM_EXHAUSTED', message: 'no memory', trace_id: 'tr1' },
      { type: 'notice', code: 'VOICE_SUBSTITUTED', message: 'using joe' });
    const s = c.getSnapshot();
    expect(s.ttsMode).toBe('fast');
    expect(s.problems.map((p) => [p.kind, p.code, p.traceId])).toEqual([['error', 'VRAM_EXHAUSTED', 'tr1'], ['notice', 'VOICE_SUBSTITUTED', null]]);
    c.dismiss(s.problems[0].id);
    expect(c.getSnapshot().problems).toHaveLength(1);
  });

  it('marks an interrupted turn and attaches replies to typed messages', () => {
    const c = new Conversation(new ApiClient(''));
    feed(c,
      { type: 'turn_started', turn_id: 'u9', turn_number: 3 },
      { type: 'llm_token', turn_id: 'u9', token: 'Long answer' },
      { type: 'interrupted', turn_id: 'u9', heard_text: 'Long' });
    expect(c.getSnapshot().turns[0]).toMatchObject({ turnId: 'u9', interrupted: true, ai: 'Long answer' });
  });
});
