import { describe, expect, it } from 'vitest';
import { listOf, parseProsody, parseSessions, parseTurns } from '../src/protocol/api';
import { LevelVad } from '../src/audio/vad';
import { initialLang, messageFor, translate } from '../src/i18n/strings';

describe('REST response parsing', () => {
  it('accepts bare arrays and envelopes', () => {
    expect(listOf([{ a: 1 }, 3, null])).toEqual([{ a: 1 }]);
    expect(listOf({ sessions: [{ a: 1 }] }, 'sessions')).toEqual([{ a: 1 }]);
    expect(listOf({ items: [{ a: 2 }] })).toEqual([{ a: 2 }]);
    expect(listOf({ nothing: true })).toEqual([]);
  });

  it('reads sessions, turns (sorted) and prosody points', () => {
    expect(parseSessions({ sessions: [{ session_id: 's1', start_time: '2026-01-01T00:00:00Z', status: 'ended', turns: 2 }, { status: 'x' }] })).toEqual([
      { session_id: 's1', start_time: '2026-01-01T00:00:00Z', status: 'ended', turns: 2 },
    ]);
    const turns = parseTurns([
      { turn_id: 'b', turn_number: 2, user_input: 'two', ai_response: 'B', emotion: 'sad' },
      { turn_id: 'a', turn_number: 1, user_input: 'one', ai_response: 'A' },
    ]);
    expect(turns.map((t) => t.turn_id)).toEqual(['a', 'b']);
    expect(turns[0].emotion).toBeNull();
    const points = parseProsody({ points: [
      { transcription_id: 't1', scores: { confidence: 70, stability: 60, affability: 50 }, reliable: false },
      { transcription_id: 't2', confidence: 71, stability: 61, affability: 51 },
      { transcription_id: 't3', scores: { confidence: 'n/a' } },
    ] });
    expect(points.map((p) => [p.transcription_id, p.confidence, p.reliable])).toEqual([['t1', 70, false], ['t2', 71, true]]);
  });
});

describe('LevelVad', () => {
  it('fires once after consecutive loud frames, not on a single click', () => {
    const vad = new LevelVad({ minLevel: 0.03, ratio: 3, frames: 2 });
    const fired = [0.01, 0.01, 0.2, 0.01, 0.01, 0.2, 0.25, 0.3, 0.3].map((l) => vad.push(l));
    expect(fired).toEqual([false, false, false, false, false, false, true, false, false]);
  });

  it('raises its threshold with the noise floor', () => {
    const vad = new LevelVad({ minLevel: 0.01, ratio: 3, frames: 1 });
    for (let i = 0; i < 200; i++) vad.push(0.009); // floor converges near 0.009 -> threshold ~0.027
    expect(vad.push(0.02)).toBe(false);
    expect(vad.push(0.05)).toBe(true);
  });
});

describe('i18n', () => {
  it('has Korean and English text and falls back to the server message for unknown codes', () => {
    expect(translate('ko', 'start')).toBe('대화 시작');
    expect(translate('en', 'start')).toBe('Start conversation');
    expect(messageFor('ko', 'err_', 'BUSY')).toContain('바쁩니다');
    expect(messageFor('en', 'err_', 'SOMETHING_NEW', 'server says no')).toBe('server says no');
    expect(initialLang(null, 'ko-KR')).toBe('ko');
    expect(initialLang('en', 'ko-KR')).toBe('en');
    expect(initialLang(null, undefined)).toBe('en');
  });
});
