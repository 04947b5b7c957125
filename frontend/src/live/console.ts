/**
 * The director console's state (docs/live.md, "Director console"): polls the live routes and runs
 * the director's actions. No React here; the page subscribes with `useSyncExternalStore`.
 */
import { ApiError, type Rating } from '../protocol/api';
import type { AvatarControl, LiveApi, LiveMessage, LiveReply, LiveStatus, SayEmotion } from './api';

export interface ConsoleSnapshot {
  /** The first poll has answered. */
  loaded: boolean;
  /** Why there is no console (live mode off, not an admin): the server's message. */
  unavailable: string | null;
  /** The last failed action or poll. */
  error: string | null;
  status: LiveStatus | null;
  messages: LiveMessage[];
  replies: LiveReply[];
  avatar: AvatarControl | null;
  /** The ratings given from this console, by turn id. */
  ratings: Record<string, Rating>;
}

const initial: ConsoleSnapshot = {
  loaded: false, unavailable: null, error: null, status: null, messages: [], replies: [], avatar: null, ratings: {},
};

export type RateFn = (turnId: string, rating: Rating, comment: string) => Promise<void>;

export class LiveConsole {
  private snap: ConsoleSnapshot = initial;
  private readonly listeners = new Set<() => void>();
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly api: LiveApi,
    private readonly rateTurn: RateFn,
  ) {}

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  getSnapshot = (): ConsoleSnapshot => this.snap;

  private update(patch: Partial<ConsoleSnapshot>): void {
    this.snap = { ...this.snap, ...patch };
    for (const fn of this.listeners) fn();
  }

  /** Poll every `everyMs` until `stop`. */
  start(everyMs = 1000): void {
    if (this.timer !== null) return;
    void this.refresh();
    this.timer = setInterval(() => void this.refresh(), everyMs);
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  async refresh(): Promise<void> {
    try {
      const [status, messages, replies, avatar] = await Promise.all([
        this.api.status(), this.api.queue(), this.api.replies(), this.api.avatar(),
      ]);
      this.update({ loaded: true, unavailable: null, status, messages, replies, avatar });
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 403 || err.status === 401)) {
        this.update({ loaded: true, unavailable: err.message });
      } else {
        this.update({ loaded: true, error: err instanceof Error ? err.message : String(err) });
      }
    }
  }

  private async act(action: () => Promise<void>): Promise<void> {
    try {
      await action();
      this.update({ error: null });
    } catch (err) {
      this.update({ error: err instanceof Error ? err.message : String(err) });
    }
    await this.refresh();
  }

  answer = (id: number): Promise<void> => this.act(() => this.api.answer(id));
  skip = (id: number): Promise<void> => this.act(() => this.api.skip(id));
  ban = (m: LiveMessage): Promise<void> => this.act(() => this.api.ban(m.platform, m.userId));
  setPaused = (paused: boolean): Promise<void> => this.act(() => this.api.pause(paused));
  setConnected = (platform: string, on: boolean): Promise<void> => this.act(() => this.api.connect(platform, on));
  say = (text: string, emotion: SayEmotion): Promise<void> => this.act(() => this.api.say(text, emotion));

  /** Rate a live reply; remembered so the buttons show it. Throws when the server refuses. */
  rate = async (turnId: string, rating: Rating, comment: string): Promise<void> => {
    await this.rateTurn(turnId, rating, comment);
    this.update({ ratings: { ...this.snap.ratings, [turnId]: rating } });
  };
}
