/** Reconnect delays: exponential backoff with full jitter and a cap (docs/design-notes.md §9). */
export interface BackoffOptions {
  baseMs?: number;
  maxMs?: number;
  factor?: number;
  /** Returns a number in [0, 1); injectable so tests are deterministic. */
  random?: () => number;
}

export class Backoff {
  private attempt = 0;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly factor: number;
  private readonly random: () => number;

  constructor(opts: BackoffOptions = {}) {
    this.baseMs = opts.baseMs ?? 500;
    this.maxMs = opts.maxMs ?? 15000;
    this.factor = opts.factor ?? 2;
    this.random = opts.random ?? Math.random;
  }

  get attempts(): number {
    return this.attempt;
  }

  /** Upper bound of the next delay (before jitter). */
  ceiling(attempt = this.attempt): number {
    return Math.min(this.maxMs, this.baseMs * this.factor ** attempt);
  }

  /** The next delay: uniform in [ceiling/2, ceiling], so retries spread out but never bunch at 0. */
  next(): number {
    const c = this.ceiling();
    this.attempt += 1;
    return Math.round(c / 2 + (this.random() * c) / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}
