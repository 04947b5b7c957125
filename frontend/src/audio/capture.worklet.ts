/**
 * AudioWorklet processor: resamples the microphone from the context rate to 16 kHz, converts to
 * PCM16 and posts fixed-size frames (with their RMS level for the local barge-in detector) to the
 * main thread. Runs on the audio rendering thread, so it only does O(n) work per 128-sample block.
 */
import { floatToPcm16, Framer, frameSamplesFor, Resampler, rms, TARGET_RATE } from './pcm';

// The AudioWorkletGlobalScope is not in TypeScript's DOM lib; declare what this file uses.
declare const sampleRate: number;
declare class AudioWorkletProcessor {
  readonly port: MessagePort;
  constructor(options?: unknown);
}
declare function registerProcessor(name: string, ctor: unknown): void;

interface CaptureOptions {
  processorOptions?: { frameMs?: number };
}

class PcmCaptureProcessor extends AudioWorkletProcessor {
  private readonly resampler: Resampler;
  private readonly framer: Framer;

  constructor(options: CaptureOptions) {
    super(options);
    const frameMs = options.processorOptions?.frameMs ?? 100;
    this.resampler = new Resampler(sampleRate, TARGET_RATE);
    this.framer = new Framer(frameSamplesFor(frameMs));
    this.port.onmessage = (ev: MessageEvent<{ type: string }>) => {
      if (ev.data.type === 'flush') {
        const rest = this.framer.flush();
        this.port.postMessage({ type: 'frame', pcm: rest, level: rms(rest), final: true }, [rest.buffer]);
      }
    };
  }

  process(inputs: Float32Array[][]): boolean {
    const channel = inputs[0]?.[0];
    if (channel && channel.length > 0) {
      const pcm = floatToPcm16(this.resampler.process(channel));
      for (const frame of this.framer.push(pcm)) {
        this.port.postMessage({ type: 'frame', pcm: frame, level: rms(frame), final: false }, [frame.buffer]);
      }
    }
    return true;
  }
}

registerProcessor('pcm-capture', PcmCaptureProcessor);
