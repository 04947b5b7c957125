import { describe, expect, it } from 'vitest';
import { AvatarAnimator } from '../src/avatar/animator';
import { avatarSocketUrl, type MouthEvent, parseAvatarEvent } from '../src/avatar/events';

const mouth = (seq: number, opens: number[], vowel: 'A' | 'O' | null = null, turn = 't1'): MouthEvent => ({
  type: 'mouth', turn_id: turn, seq, chunk_offset_ms: seq * opens.length * 20, duration_ms: opens.length * 20,
  frame_ms: 20, source: vowel ? 'phonemes' : 'level',
  frames: opens.map((open, i) => ({ offset_ms: i * 20, open, vowel })),
});

describe('avatar events', () => {
  it('parses known events and refuses malformed ones', () => {
    expect(parseAvatarEvent(JSON.stringify(mouth(0, [0.5])))?.type).toBe('mouth');
    expect(parseAvatarEvent('{"type":"interrupted","turn_id":"x"}')?.type).toBe('interrupted');
    expect(parseAvatarEvent('not json')).toBeNull();
    expect(parseAvatarEvent('{"type":"mouth","seq":1}')).toBeNull();
    expect(parseAvatarEvent('{"type":"dance"}')).toBeNull();
    expect(parseAvatarEvent('{"type":"idle","parameters":null,"transition_ms":1}')).toBeNull();
  });

  it('builds the control stream URL with the session token', () => {
    expect(avatarSocketUrl({ protocol: 'https:', host: 'h:1' }, 'abc', 't k')).toBe('wss://h:1/ws/abc/avatar?token=t%20k');
  });
});

describe('AvatarAnimator', () => {
  it('plays mouth frames when their audio chunk plays, waiting for the chunk if needed', () => {
    const a = new AvatarAnimator();
    a.apply(mouth(0, [0.2, 0.4, 0.6]), 0); // the mouth event came before its audio chunk
    expect(a.values(0.5).AvatarMouthOpen).toBe(0);
    a.chunkStarted('t1', 0, 1.0);
    expect(a.values(0.99).AvatarMouthOpen).toBe(0);
    expect(a.values(1.005).AvatarMouthOpen).toBeCloseTo(0.2);
    expect(a.values(1.045).AvatarMouthOpen).toBeCloseTo(0.6);
    a.chunkStarted('t1', 1, 1.06);
    a.apply(mouth(1, [0.9, 0.9], 'O'), 1.05);
    const v = a.values(1.07);
    expect(v.AvatarMouthOpen).toBeCloseTo(0.9);
    expect(v.AvatarVowelO).toBeCloseTo(0.9);
    expect(v.AvatarVowelA).toBe(0);
    expect(a.values(1.2).AvatarMouthOpen).toBe(0); // after the last frame
  });

  it('closes the mouth at once on interrupted and ignores that turn afterwards', () => {
    const a = new AvatarAnimator();
    a.chunkStarted('t1', 0, 0);
    a.apply(mouth(0, [0.8, 0.8, 0.8, 0.8, 0.8]), 0);
    expect(a.values(0.01).AvatarMouthOpen).toBeCloseTo(0.8);
    a.apply({ type: 'interrupted', turn_id: 't1' }, 0.02);
    expect(a.values(0.03).AvatarMouthOpen).toBe(0);
    a.chunkStarted('t1', 1, 0.1);
    a.apply(mouth(1, [0.8]), 0.1);
    expect(a.values(0.105).AvatarMouthOpen).toBe(0);
    expect(a.speaking(0.105)).toBe(false);
  });

  it('interpolates expressions linearly and adds idle head motion, clamped', () => {
    const a = new AvatarAnimator();
    a.apply({ type: 'expression', turn_id: 't', emotion: 'happy', parameters: { AvatarSmile: 1, AvatarHeadX: 28 },
      transition_ms: 200, hotkey: null }, 10);
    expect(a.values(10.1).AvatarSmile).toBeCloseTo(0.5);
    a.apply({ type: 'idle', active: true, parameters: { AvatarHeadX: 5 }, transition_ms: 0 }, 10.2);
    const v = a.values(10.5);
    expect(v.AvatarSmile).toBeCloseTo(1);
    expect(v.AvatarHeadX).toBe(30); // 28 + 5, clamped to the range
    expect(a.emotion).toBe('happy');
  });
});
