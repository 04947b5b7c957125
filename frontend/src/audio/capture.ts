/** Microphone capture: getUserMedia -> AudioWorklet (PCM16 16 kHz frames) -> callback. */
import workletUrl from './capture.worklet.ts?worker&url';

export interface CapturedFrame {
  pcm: Int16Array;
  /** RMS level of the frame, 0..1. */
  level: number;
  /** True for the partial frame returned by {@link MicCapture.flush}. */
  final: boolean;
}

export class MicCapture {
  private ctx: AudioContext | null = null;
  private stream: MediaStream | null = null;
  private node: AudioWorkletNode | null = null;

  constructor(
    private readonly onFrame: (frame: CapturedFrame) => void,
    private readonly frameMs = 100,
  ) {}

  get running(): boolean {
    return this.ctx !== null;
  }

  async start(): Promise<void> {
    if (this.ctx) return;
    if (!navigator.mediaDevices?.getUserMedia) throw new Error('MIC_UNSUPPORTED');
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    const ctx = new AudioContext({ latencyHint: 'interactive' });
    try {
      await ctx.audioWorklet.addModule(workletUrl);
      const source = ctx.createMediaStreamSource(stream);
      const node = new AudioWorkletNode(ctx, 'pcm-capture', {
        numberOfInputs: 1,
        numberOfOutputs: 0,
        channelCount: 1,
        processorOptions: { frameMs: this.frameMs },
      });
      node.port.onmessage = (ev: MessageEvent<CapturedFrame & { type: string }>) => {
        if (ev.data.type === 'frame') this.onFrame(ev.data);
      };
      source.connect(node);
      if (ctx.state === 'suspended') await ctx.resume();
      this.ctx = ctx;
      this.stream = stream;
      this.node = node;
    } catch (err) {
      stream.getTracks().forEach((t) => t.stop());
      await ctx.close();
      throw err;
    }
  }

  /** Asks the worklet for its partial frame (push-to-talk release). */
  flush(): void {
    this.node?.port.postMessage({ type: 'flush' });
  }

  async stop(): Promise<void> {
    this.node?.disconnect();
    this.stream?.getTracks().forEach((t) => t.stop());
    const ctx = this.ctx;
    this.ctx = null;
    this.node = null;
    this.stream = null;
    if (ctx) await ctx.close();
  }
}
