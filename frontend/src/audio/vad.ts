/**
 * Local speech detector for barge-in: fires when the microphone level stays above an adaptive
 * threshold (a multiple of the tracked noise floor) for a few consecutive frames. Crude next to
 * the server's Silero VAD, but it reacts within ~2 frames without a round trip.
 */
export interface LevelVadOptions {
  /** Absolute RMS level below which nothing counts as speech. */
  minLevel?: number;
  /** Speech must be this many times louder than the noise floor. */
  ratio?: number;
  /** Consecutive loud frames needed to fire. */
  frames?: number;
}

export class LevelVad {
  private floor = 0.005;
  private run = 0;
  private readonly minLevel: number;
  private readonly ratio: number;
  private readonly frames: number;

  constructor(opts: LevelVadOptions = {}) {
    this.minLevel = opts.minLevel ?? 0.03;
    this.ratio = opts.ratio ?? 3;
    this.frames = opts.frames ?? 2;
  }

  /** Feeds one frame's level; true exactly on the frame where speech is first confirmed. */
  push(level: number): boolean {
    const loud = level >= Math.max(this.minLevel, this.floor * this.ratio);
    if (loud) {
      this.run += 1;
      return this.run === this.frames;
    }
    this.run = 0;
    // the floor follows quiet frames quickly and never rises from loud ones
    this.floor = this.floor * 0.9 + level * 0.1;
    return false;
  }

  reset(): void {
    this.run = 0;
  }
}
