import { describe, expect, it } from 'vitest';
import { Backoff } from '../src/protocol/backoff';
import {
  type ConnectionStatus, RealtimeConnection, sessionSocketProtocols, sessionSocketUrl, type SocketLike, type Timers,
} from '../src/protocol/connection';
import { parseServerMessage, ProtocolError, type ServerMessage } from '../src/protocol/messages';

describe('parseServerMessage', () => {
  it('parses every v1 server message type', () => {
    const samples: Record<string, object> = {
      session_state: { session_id: 's', state: 'listening', resumed: false, turns: 0, tts_mode: 'fast', voice: null, protocol_version: 1 },
      speech_started: { timestamp: 12 },
      transcription_partial: { text: 'hel', confidence: 0.5, is_final: false, language: 'en' },
      transcription_final: { transcription_id: 't', text: 'hello', confidence: 0.9, is_final: true, language: 'en', low_confidence: false, latency_ms: 300 },
      turn_started: { turn_id: 'u', turn_number: 1 },
      emotion: { turn_id: 'u', emotion: 'happy' },
      llm_token: { turn_id: 'u', token: 'Hi' },
      audio_chunk: { turn_id: 'u', data: 'AAABAA==', sr: 22050, mode: 'fast', seq: 0, duration_ms: 0.1, text: 'Hi' },
      turn_completed: { turn_id: 'u', text: 'Hi!', emotion: 'happy', interrupted: false, latency_ms: { llm: 200, bogus: 'x' } },
      interrupted: { turn_id: 'u', heard_text: 'Hi' },
      hq_ready: { turn_id: 'u', url: '/objects/x.wav', duration_ms: 900 },
      prosody_analysis: { transcription_id: 't', scores: { confidence: 70, stability: 60, affability: 80 }, reliable: true, reason: null },
      notice: { code: 'HQ_DEGRADED', message: 'fast only' },
      error: { code: 'BUSY', message: 'busy', trace_id: 'abc' },
      pong: { t: 5 },
      heartbeat: { t: 6 },
    };
    for (const [type, body] of Object.entries(samples)) {
      const msg = parseServerMessage(JSON.stringify({ type, ...body }));
      expect(msg.type).toBe(type);
    }
    const done = parseServerMessage(JSON.stringify({ type: 'turn_completed', ...samples.turn_completed }));
    expect(done).toMatchObject({ latency_ms: { llm: 200 } });
    expect((done as { latency_ms: object }).latency_ms).not.toHaveProperty('bogus');
  });

  it.each([
    ['{', 'not JSON'],
    ['[]', 'not an object'],
    ['"x"', 'not an object'],
    ['{"text":"x"}', 'missing type'],
    ['{"type":"telepathy"}', 'unknown type telepathy'],
    ['{"type":"llm_token","turn_id":"u","token":5}', 'llm_token.token must be a string'],
    ['{"type":"session_state","session_id":"s","state":"dancing"}', 'session_state.state must be listening, thinking or speaking'],
    ['{"type":"audio_chunk","turn_id":"u","data":"AAAA","sr":96000}', 'audio_chunk.sr must be 8000-48000'],
    ['{"type":"audio_chunk","turn_id":"u","data":"not base64!","sr":16000}', 'audio_chunk.data must be base64'],
    ['{"type":"audio_chunk","turn_id":"u","data":"AAAA","sr":16000,"mode":"ultra"}', 'audio_chunk.mode must be fast or hq'],
    ['{"type":"prosody_analysis","transcription_id":"t"}', 'prosody_analysis.scores must be an object'],
    ['{"type":"prosody_analysis","transcription_id":"t","scores":{"confidence":"high"}}', 'prosody_analysis.confidence must be a number'],
    ['{"type":"error","message":"x"}', 'error.code must be a string'],
  ])('rejects %s with a clear reason', (raw, reason) => {
    expect(() => parseServerMessage(raw)).toThrow(ProtocolError);
    try {
      parseServerMessage(raw);
    } catch (e) {
      expect((e as ProtocolError).reason).toBe(reason);
    }
  });

  it('degrades an unknown emotion to neutral instead of failing', () => {
    expect(parseServerMessage('{"type":"emotion","turn_id":"u","emotion":"smug"}')).toEqual({ type: 'emotion', turn_id: 'u', emotion: 'neutral' });
  });
});

describe('Backoff', () => {
  it('grows exponentially up to the cap, with jitter in [ceiling/2, ceiling]', () => {
    const lo = new Backoff({ baseMs: 100, maxMs: 1000, random: () => 0 });
    expect([1, 2, 3, 4, 5, 6].map(() => lo.next())).toEqual([50, 100, 200, 400, 500, 500]);
    const hi = new Backoff({ baseMs: 100, maxMs: 1000, random: () => 0.999999 });
    expect([1, 2, 3, 4, 5].map(() => hi.next())).toEqual([100, 200, 400, 800, 1000]);
    expect(hi.attempts).toBe(5);
    hi.reset();
    expect(hi.attempts).toBe(0);
    expect(hi.next()).toBe(100);
  });
});

class FakeSocket implements SocketLike {
  readyState = 0;
  binaryType = 'blob';
  sent: unknown[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor(readonly url: string) {}
  send(d: unknown) { this.sent.push(d); }
  close(code = 1000) { this.serverClose(code); }
  open() { this.readyState = 1; this.onopen?.({}); }
  serverClose(code: number) { this.readyState = 3; this.onclose?.({ code, reason: '' }); }
  receive(obj: object | string) { this.onmessage?.({ data: typeof obj === 'string' ? obj : JSON.stringify(obj) }); }
}

class FakeTimers implements Timers {
  now = 0;
  private seq = 0;
  private tasks = new Map<number, { at: number; fn: () => void; every: number | null }>();
  setTimeout(fn: () => void, ms: number) { const id = ++this.seq; this.tasks.set(id, { at: this.now + ms, fn, every: null }); return id; }
  clearTimeout(h: unknown) { this.tasks.delete(h as number); }
  setInterval(fn: () => void, ms: number) { const id = ++this.seq; this.tasks.set(id, { at: this.now + ms, fn, every: ms }); return id; }
  clearInterval(h: unknown) { this.tasks.delete(h as number); }
  get pending() { return this.tasks.size; }
  advance(ms: number) {
    const end = this.now + ms;
    for (;;) {
      const due = [...this.tasks.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      const [id, t] = due;
      this.now = t.at;
      if (t.every === null) this.tasks.delete(id);
      else t.at += t.every;
      t.fn();
    }
    this.now = end;
  }
}

function harness(maxAttempts = 12) {
  const sockets: FakeSocket[] = [];
  const statuses: Array<[ConnectionStatus, number | undefined]> = [];
  const messages: ServerMessage[] = [];
  const protocolErrors: string[] = [];
  const timers = new FakeTimers();
  const conn = new RealtimeConnection({
    url: 'ws://h/ws/s1?token=tok&v=1',
    onMessage: (m) => messages.push(m),
    onStatus: (s, d) => statuses.push([s, d.delayMs]),
    onProtocolError: (e) => protocolErrors.push(e.reason),
    createSocket: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    timers,
    backoff: new Backoff({ baseMs: 100, maxMs: 800, random: () => 0.5 }),
    heartbeatMs: 1000,
    maxAttempts,
    now: () => timers.now,
  });
  return { conn, sockets, statuses, messages, protocolErrors, timers };
}

describe('RealtimeConnection', () => {
  it('delivers parsed messages and reports protocol errors without dropping the socket', () => {
    const h = harness();
    h.conn.connect();
    h.sockets[0].open();
    expect(h.sockets[0].binaryType).toBe('arraybuffer');
    h.sockets[0].receive({ type: 'pong', t: 1 });
    h.sockets[0].receive('garbage');
    h.sockets[0].receive({ type: 'mystery' });
    expect(h.messages).toEqual([{ type: 'pong', t: 1 }]);
    expect(h.protocolErrors).toEqual(['not JSON', 'unknown type mystery']);
    expect(h.conn.state).toBe('open');
  });

  it('reconnects with growing delays to the same URL and token, then resets after success', () => {
    const h = harness();
    h.conn.connect();
    h.sockets[0].open();
    h.sockets[0].serverClose(1006);
    expect(h.statuses.at(-1)).toEqual(['reconnecting', 75]);
    h.timers.advance(74);
    expect(h.sockets.length).toBe(1);
    h.timers.advance(1);
    expect(h.sockets.length).toBe(2);
    h.sockets[1].serverClose(1006);
    expect(h.statuses.at(-1)).toEqual(['reconnecting', 150]);
    h.timers.advance(150);
    h.sockets[2].serverClose(1011);
    expect(h.statuses.at(-1)).toEqual(['reconnecting', 300]);
    h.timers.advance(300);
    h.sockets[3].open();
    expect(h.sockets.every((s) => s.url === 'ws://h/ws/s1?token=tok&v=1')).toBe(true);
    expect(h.conn.state).toBe('open');
    h.sockets[3].serverClose(1006);
    expect(h.statuses.at(-1)).toEqual(['reconnecting', 75]); // backoff was reset by the successful open
  });

  it.each([4401, 4404, 1009])('gives up at once on close code %i', (code) => {
    const h = harness();
    h.conn.connect();
    h.sockets[0].open();
    h.sockets[0].serverClose(code);
    expect(h.conn.state).toBe('failed');
    h.timers.advance(60_000);
    expect(h.sockets.length).toBe(1);
  });

  it('stops after the maximum number of attempts', () => {
    const h = harness(3);
    h.conn.connect();
    for (let i = 0; i < 10; i++) {
      h.sockets.at(-1)?.serverClose(1006);
      h.timers.advance(10_000);
    }
    expect(h.sockets.length).toBe(4);
    expect(h.conn.state).toBe('failed');
  });

  it('queues control messages while down, never audio, and flushes them on reopen', () => {
    const h = harness();
    h.conn.connect();
    expect(h.conn.send({ type: 'set_tts_mode', mode: 'hq' })).toBe(false);
    expect(h.conn.sendAudio(new Int16Array(160))).toBe(false);
    expect(h.conn.send({ type: 'audio_chunk', data: 'AAAA', sr: 16000, timestamp: 0 })).toBe(false);
    h.sockets[0].open();
    expect(h.sockets[0].sent).toEqual(['{"type":"set_tts_mode","mode":"hq"}']);
    const pcm = Int16Array.from([1, 2, 3, 4]).subarray(1, 3);
    expect(h.conn.sendAudio(pcm)).toBe(true); // not confirmed binary: JSON + base64
    expect(JSON.parse(h.sockets[0].sent[1] as string)).toEqual({ type: 'audio_chunk', data: 'AgADAA==', sr: 16000, timestamp: 0 });
  });

  it('sends and receives binary audio frames once session_state confirms them, per socket', () => {
    const audio: Array<[string, number, number[]]> = [];
    const h = harness();
    const conn = new RealtimeConnection({
      url: 'ws://h/ws/s1?v=1&audio=binary',
      onMessage: (m) => h.messages.push(m),
      onAudio: (f) => audio.push([f.turn_id, f.seq, Array.from(f.pcm)]),
      onStatus: () => {},
      onProtocolError: (e) => h.protocolErrors.push(e.reason),
      createSocket: (url) => {
        const s = new FakeSocket(url);
        h.sockets.push(s);
        return s;
      },
      timers: h.timers,
      now: () => h.timers.now,
    });
    conn.connect();
    h.sockets[0].open();
    const state = { type: 'session_state', session_id: 's1', state: 'listening', turns: 0, tts_mode: 'fast', audio_frames: 'binary' };
    h.sockets[0].receive(state);
    expect(h.messages[0]).toMatchObject({ type: 'session_state', audio_frames: 'binary' });
    h.timers.now += 5; // timestamps count from the socket's opening
    conn.sendAudio(Int16Array.from([7, 8]));
    conn.sendAudio(Int16Array.from([9]), 24000);
    const [first, second] = h.sockets[0].sent.map((d) => new DataView(d as ArrayBuffer));
    expect([first.getUint8(0), first.getUint32(4, true), first.getUint32(8, true), first.getBigInt64(12, true)]).toEqual([1, 16000, 0, 5n]);
    expect([first.getInt16(20, true), first.getInt16(22, true)]).toEqual([7, 8]);
    expect([second.getUint32(4, true), second.getUint32(8, true), second.getInt16(20, true)]).toEqual([24000, 1, 9]);
    const reply = new ArrayBuffer(38);
    new DataView(reply).setUint8(0, 2);
    new DataView(reply).setInt16(36, -3, true);
    h.sockets[0].onmessage?.({ data: reply });
    h.sockets[0].onmessage?.({ data: new ArrayBuffer(3) });
    expect(audio).toEqual([['00000000-0000-0000-0000-000000000000', 0, [-3]]]);
    expect(h.protocolErrors).toHaveLength(1);
    h.sockets[0].serverClose(1006); // a new socket starts in JSON until it is confirmed again
    h.timers.advance(60_000);
    h.sockets[1].open();
    conn.sendAudio(Int16Array.from([1]));
    expect(JSON.parse(h.sockets[1].sent[0] as string).type).toBe('audio_chunk');
  });

  it('sends heartbeats while open and stops them when closed by the user', () => {
    const h = harness();
    h.conn.connect();
    h.sockets[0].open();
    h.timers.advance(2500);
    expect(h.sockets[0].sent).toEqual(['{"type":"ping","t":1000}', '{"type":"ping","t":2000}']);
    h.conn.close();
    expect(h.conn.state).toBe('closed');
    expect(h.timers.pending).toBe(0);
    h.timers.advance(60_000);
    expect(h.sockets.length).toBe(1);
  });

  it('treats drop() like a network failure: it reconnects', () => {
    const h = harness();
    h.conn.connect();
    h.sockets[0].open();
    h.conn.drop();
    expect(h.conn.state).toBe('reconnecting');
    h.timers.advance(100);
    expect(h.sockets.length).toBe(2);
  });

  it('cancels a pending reconnect when closed by the user', () => {
    const h = harness();
    h.conn.connect();
    h.sockets[0].serverClose(1006);
    h.conn.close();
    h.timers.advance(60_000);
    expect(h.sockets.length).toBe(1);
    expect(h.conn.state).toBe('closed');
  });
});

describe('sessionSocketUrl', () => {
  it('builds a same-origin ws/wss URL without the token', () => {
    expect(sessionSocketUrl({ protocol: 'http:', host: 'localhost:8000' }, 'abc')).toBe('ws://localhost:8000/ws/abc?v=1&audio=binary');
    expect(sessionSocketUrl({ protocol: 'https:', host: 'avatar.example' }, 'abc')).toBe('wss://avatar.example/ws/abc?v=1&audio=binary');
  });

  it('carries the token in the subprotocols, offered to every socket it opens', () => {
    expect(sessionSocketProtocols('1700000000.n0nce-_.m4c')).toEqual(['avatar.v1', 'avatar.token.1700000000.n0nce-_.m4c']);
    expect(() => sessionSocketProtocols('a b')).toThrow();
    const offered: Array<string[] | undefined> = [];
    const conn = new RealtimeConnection({
      url: 'ws://h/ws/s1?v=1',
      protocols: sessionSocketProtocols('tok'),
      onMessage: () => undefined,
      onStatus: () => undefined,
      createSocket: (url, protocols) => {
        offered.push(protocols);
        return new FakeSocket(url);
      },
      timers: new FakeTimers(),
    });
    conn.connect();
    expect(offered).toEqual([['avatar.v1', 'avatar.token.tok']]);
  });
});
