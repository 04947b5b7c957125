/**
 * Gapless playback of streamed reply audio: every chunk becomes an AudioBufferSourceNode started
 * exactly when the previous one ends (`nextStart`), so chunks join without gaps or overlaps no
 * matter how irregularly they arrive. Typed against a minimal slice of the Web Audio API so tests
 * can drive it with a fake clock.
 */

export interface BufferLike {
  readonly duration: number;
  copyToChannel(source: Float32Array, channel: number): void;
}

export interface SourceLike {
  buffer: BufferLike | null;
  onended: (() => void) | null;
  connect(destination: unknown): unknown;
  start(when?: number): void;
  stop(when?: number): void;
  disconnect(): void;
}

export interface PlaybackContextLike {
  readonly currentTime: number;
  createBuffer(channels: number, length: number, sampleRate: number): BufferLike;
  createBufferSource(): SourceLike;
}

export interface QueuedChunk {
  turnId: string;
  samples: Float32Array;
  sampleRate: number;
  text: string;
  mode: 'fast' | 'hq';
}

interface Scheduled {
  chunk: QueuedChunk;
  source: SourceLike;
  start: number;
  end: number;
}

export interface StopResult {
  turnId: string | null;
  playedMs: number;
  heardText: string;
}

export interface PlaybackEvents {
  /** A chunk finished playing to its end. */
  onChunkPlayed?(chunk: QueuedChunk, totalPlayed: number): void;
  /** The queue ran dry (all scheduled audio has played). */
  onIdle?(): void;
}

export class PlaybackQueue {
  /** Small lead so the first chunk is never scheduled in the past on a busy main thread. */
  static readonly LEAD_S = 0.06;
  private scheduled: Scheduled[] = [];
  private nextStart = 0;
  private history: Scheduled[] = [];
  private currentTurn: string | null = null;
  playedChunks = 0;

  constructor(
    private readonly ctx: PlaybackContextLike,
    private readonly destination: unknown,
    private readonly events: PlaybackEvents = {},
  ) {}

  /** Seconds of audio scheduled but not yet played. */
  get bufferedSeconds(): number {
    return Math.max(0, this.nextStart - this.ctx.currentTime);
  }

  get playing(): boolean {
    return this.scheduled.length > 0;
  }

  /** Schedules one chunk right after the previous one; returns its start time. */
  enqueue(chunk: QueuedChunk): number {
    if (chunk.samples.length === 0) return this.nextStart;
    if (chunk.turnId !== this.currentTurn) {
      this.currentTurn = chunk.turnId;
      this.history = [];
    }
    const buffer = this.ctx.createBuffer(1, chunk.samples.length, chunk.sampleRate);
    buffer.copyToChannel(chunk.samples, 0);
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.destination);
    const start = Math.max(this.nextStart, this.ctx.currentTime + PlaybackQueue.LEAD_S);
    const end = start + chunk.samples.length / chunk.sampleRate;
    const item: Scheduled = { chunk, source, start, end };
    source.onended = () => this.finished(item);
    source.start(start);
    this.nextStart = end;
    this.scheduled.push(item);
    this.history.push(item);
    return start;
  }

  private finished(item: Scheduled): void {
    const i = this.scheduled.indexOf(item);
    if (i < 0) return; // stopped: not counted as played
    this.scheduled.splice(i, 1);
    item.source.disconnect();
    this.playedChunks += 1;
    this.events.onChunkPlayed?.(item.chunk, this.playedChunks);
    if (this.scheduled.length === 0) this.events.onIdle?.();
  }

  /** Milliseconds of the current turn that have actually reached the speaker. */
  playedMs(): number {
    const now = this.ctx.currentTime;
    let s = 0;
    for (const item of this.history) s += Math.max(0, Math.min(now, item.end) - item.start);
    return Math.round(s * 1000);
  }

  /**
   * Text of the current turn's clauses that have started playing (what the listener heard).
   * A clause usually spans several chunks that all carry its text, so consecutive repeats collapse.
   */
  heardText(): string {
    const now = this.ctx.currentTime;
    const clauses: string[] = [];
    for (const item of this.history) {
      const text = item.chunk.text.trim();
      if (item.start > now || !text || clauses[clauses.length - 1] === text) continue;
      clauses.push(text);
    }
    return clauses.join(' ');
  }

  /** Stops everything now (barge-in); reports how much of the turn was heard. */
  stop(): StopResult {
    const result: StopResult = {
      turnId: this.currentTurn,
      playedMs: this.playedMs(),
      heardText: this.heardText(),
    };
    const items = this.scheduled;
    this.scheduled = [];
    for (const item of items) {
      item.source.onended = null;
      try {
        item.source.stop();
      } catch {
        // already stopped
      }
      item.source.disconnect();
    }
    this.nextStart = 0;
    this.history = [];
    this.currentTurn = null;
    if (items.length > 0) this.events.onIdle?.();
    return result;
  }
}
