import { describe, expect, it } from 'vitest';
import { type BufferLike, type PlaybackContextLike, PlaybackQueue, type SourceLike } from '../src/audio/playback';

/** A Web Audio stand-in with a manual clock: sources end when the clock passes their end. */
class FakeContext implements PlaybackContextLike {
  currentTime = 0;
  sources: FakeSource[] = [];
  createBuffer(_c: number, length: number, sampleRate: number): BufferLike {
    return { duration: length / sampleRate, copyToChannel: () => undefined };
  }
  createBufferSource(): SourceLike {
    const s = new FakeSource();
    this.sources.push(s);
    return s;
  }
  advance(to: number): void {
    this.currentTime = to;
    for (const s of this.sources) {
      if (s.startedAt !== null && !s.stopped && !s.ended && s.startedAt + (s.buffer?.duration ?? 0) <= to) {
        s.ended = true;
        s.onended?.();
      }
    }
  }
}

class FakeSource implements SourceLike {
  buffer: BufferLike | null = null;
  onended: (() => void) | null = null;
  startedAt: number | null = null;
  stopped = false;
  ended = false;
  connected: unknown = null;
  connect(d: unknown) { this.connected = d; return d; }
  start(when = 0) { this.startedAt = when; }
  stop() { this.stopped = true; }
  disconnect() { this.connected = null; }
}

const chunk = (ms: number, text = '', turnId = 'turn-1', sr = 22050) => ({
  turnId, samples: new Float32Array(Math.round((sr * ms) / 1000)), sampleRate: sr, text, mode: 'fast' as const,
});

describe('PlaybackQueue', () => {
  it('schedules chunks back to back with no gap or overlap', () => {
    const ctx = new FakeContext();
    const q = new PlaybackQueue(ctx, 'out');
    const starts = [q.enqueue(chunk(200)), q.enqueue(chunk(300)), q.enqueue(chunk(100))];
    expect(starts[0]).toBeCloseTo(PlaybackQueue.LEAD_S, 9);
    expect(starts[1]).toBeCloseTo(starts[0] + 0.2, 9);
    expect(starts[2]).toBeCloseTo(starts[1] + 0.3, 9);
    expect(ctx.sources.every((s) => s.connected === 'out')).toBe(true);
    expect(q.bufferedSeconds).toBeCloseTo(PlaybackQueue.LEAD_S + 0.6, 9);
  });

  it('keeps gapless timing when a chunk arrives while the previous one is still playing', () => {
    const ctx = new FakeContext();
    const q = new PlaybackQueue(ctx, null);
    const first = q.enqueue(chunk(500));
    ctx.advance(0.3);
    expect(q.enqueue(chunk(200))).toBeCloseTo(first + 0.5, 9);
  });

  it('restarts just ahead of the clock after an underrun instead of in the past', () => {
    const ctx = new FakeContext();
    const q = new PlaybackQueue(ctx, null);
    q.enqueue(chunk(100));
    ctx.advance(2);
    expect(q.enqueue(chunk(100))).toBeCloseTo(2 + PlaybackQueue.LEAD_S, 9);
  });

  it('counts played chunks, reports idle, and tracks what was heard', () => {
    const ctx = new FakeContext();
    const played: number[] = [];
    let idle = 0;
    const q = new PlaybackQueue(ctx, null, { onChunkPlayed: (_c, n) => played.push(n), onIdle: () => idle++ });
    q.enqueue(chunk(200, 'Hello there.'));
    q.enqueue(chunk(200, 'How are you?'));
    ctx.advance(0.2);
    expect(q.heardText()).toBe('Hello there.');
    expect(q.playedMs()).toBe(140);
    ctx.advance(1);
    expect(played).toEqual([1, 2]);
    expect(idle).toBe(1);
    expect(q.playing).toBe(false);
    expect(q.playedMs()).toBe(400);
    expect(q.heardText()).toBe('Hello there. How are you?');
  });

  it('stop() silences every scheduled source at once and reports the heard part', () => {
    const ctx = new FakeContext();
    let idle = 0;
    const q = new PlaybackQueue(ctx, null, { onIdle: () => idle++ });
    q.enqueue(chunk(300, 'one'));
    q.enqueue(chunk(300, 'two'));
    q.enqueue(chunk(300, 'three'));
    ctx.advance(0.5);
    const r = q.stop();
    expect(r).toEqual({ turnId: 'turn-1', playedMs: 440, heardText: 'one two' });
    expect(ctx.sources.map((s) => (s.ended ? 'ended' : s.stopped ? 'stopped' : 'live'))).toEqual(['ended', 'stopped', 'stopped']);
    expect(q.playing).toBe(false);
    expect(idle).toBe(1);
    ctx.advance(5);
    expect(q.playedChunks).toBe(1); // stopped chunks are not counted as played
    // the next reply starts fresh, right away
    expect(q.enqueue(chunk(100, 'x', 'turn-2'))).toBeCloseTo(5 + PlaybackQueue.LEAD_S, 9);
    expect(q.stop().heardText).toBe('');
  });

  it('counts a clause spread over several chunks once in the heard text', () => {
    const ctx = new FakeContext();
    const q = new PlaybackQueue(ctx, null);
    for (const text of ['Hello!', 'Hello!', 'Hello!', 'It is a fine day.', 'It is a fine day.']) q.enqueue(chunk(100, text));
    ctx.advance(0.45);
    expect(q.heardText()).toBe('Hello! It is a fine day.');
  });

  it('starts a new turn’s accounting when the turn id changes', () => {
    const ctx = new FakeContext();
    const q = new PlaybackQueue(ctx, null);
    q.enqueue(chunk(100, 'old', 'a'));
    ctx.advance(1);
    q.enqueue(chunk(100, 'new', 'b'));
    ctx.advance(1.2);
    expect(q.heardText()).toBe('new');
    expect(q.playedMs()).toBe(100);
  });

  it('ignores empty chunks and honours each chunk’s sample rate', () => {
    const ctx = new FakeContext();
    const q = new PlaybackQueue(ctx, null);
    q.enqueue({ ...chunk(0), samples: new Float32Array(0) });
    expect(ctx.sources.length).toBe(0);
    const a = q.enqueue(chunk(100, '', 't', 16000));
    const b = q.enqueue(chunk(100, '', 't', 24000));
    expect(b - a).toBeCloseTo(0.1, 9);
  });
});
