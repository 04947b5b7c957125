/** Record a voice sample from the microphone with MediaRecorder (WebM/Opus where supported). */

const PREFERRED_TYPES = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus', 'audio/webm', 'audio/mp4'];

export function pickMimeType(isSupported: (type: string) => boolean): string | undefined {
  return PREFERRED_TYPES.find((t) => isSupported(t));
}

/** File name extension the server can recognize for a recorded blob's MIME type. */
export function extensionFor(mimeType: string): string {
  if (mimeType.includes('ogg')) return 'ogg';
  if (mimeType.includes('webm')) return 'webm';
  if (mimeType.includes('wav')) return 'wav';
  if (mimeType.includes('mpeg')) return 'mp3';
  return 'bin';
}

export interface Recording {
  blob: Blob;
  seconds: number;
  filename: string;
}

/** One recording session: `start()`, then `stop()` resolves with the audio. Stops itself at `maxSeconds`. */
export class SampleRecorder {
  private recorder: MediaRecorder | null = null;
  private stream: MediaStream | null = null;
  private parts: Blob[] = [];
  private startedAt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private done: Promise<Recording> | null = null;

  constructor(private readonly maxSeconds: number) {}

  get recording(): boolean {
    return this.recorder?.state === 'recording';
  }

  elapsed(): number {
    return this.recording ? (performance.now() - this.startedAt) / 1000 : 0;
  }

  async start(onAutoStop: (rec: Recording) => void): Promise<void> {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const mimeType = pickMimeType((t) => MediaRecorder.isTypeSupported(t));
    const recorder = new MediaRecorder(this.stream, mimeType ? { mimeType } : undefined);
    this.recorder = recorder;
    this.parts = [];
    this.done = new Promise<Recording>((resolve) => {
      recorder.ondataavailable = (e) => {
        if (e.data.size > 0) this.parts.push(e.data);
      };
      recorder.onstop = () => {
        const type = recorder.mimeType || mimeType || 'audio/webm';
        const blob = new Blob(this.parts, { type });
        const seconds = (performance.now() - this.startedAt) / 1000;
        this.release();
        resolve({ blob, seconds, filename: `recording.${extensionFor(type)}` });
      };
    });
    this.startedAt = performance.now();
    recorder.start(250);
    this.timer = setTimeout(() => {
      void this.stop().then(onAutoStop);
    }, this.maxSeconds * 1000);
  }

  async stop(): Promise<Recording> {
    if (!this.recorder || !this.done) throw new Error('not recording');
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.recorder.state !== 'inactive') this.recorder.stop();
    return this.done;
  }

  /** Give the microphone back (also when the page unmounts mid-recording). */
  release(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.stream?.getTracks().forEach((t) => t.stop());
    this.stream = null;
  }
}
