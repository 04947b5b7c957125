/**
 * The conversation controller: owns the realtime connection, the microphone and the reply
 * playback, turns server messages into a UI snapshot, and decides barge-in. No React here; the
 * UI subscribes with `useSyncExternalStore`.
 */
import { type CapturedFrame, MicCapture } from './audio/capture';
import { bytesToPcm16, base64ToBytes, pcm16ToFloat } from './audio/pcm';
import { PlaybackQueue, type PlaybackContextLike } from './audio/playback';
import { LevelVad } from './audio/vad';
import { AvatarAnimator } from './avatar/animator';
import { avatarSocketUrl } from './avatar/events';
import { AvatarStream } from './avatar/stream';
import { ApiClient, ApiError } from './protocol/api';
import { type ConnectionStatus, RealtimeConnection, sessionSocketProtocols, sessionSocketUrl } from './protocol/connection';
import type { ConversationState, Emotion, ServerMessage, TtsMode } from './protocol/messages';

export type InputMode = 'handsfree' | 'ptt';

export interface TurnView {
  key: string;
  turnId: string | null;
  user: string;
  ai: string;
  emotion: Emotion;
  interrupted: boolean;
  lowConfidence: boolean;
  hqUrl: string | null;
  done: boolean;
}

export interface Problem {
  id: number;
  kind: 'error' | 'notice';
  code: string;
  message: string;
  traceId: string | null;
}

export interface Snapshot {
  connection: ConnectionStatus;
  closeCode: number | null;
  reconnectAttempt: number;
  sessionId: string | null;
  resumed: boolean;
  state: ConversationState;
  partial: string;
  turns: TurnView[];
  emotion: Emotion;
  problems: Problem[];
  micOn: boolean;
  inputMode: InputMode;
  pttActive: boolean;
  ttsMode: TtsMode;
  voice: string;
  voiceProfileId: string | null;
  bargeIn: boolean;
  playedChunks: number;
  receivedChunks: number;
  speaking: boolean;
  /** The avatar control stream is open: the face follows its events (docs/avatar-control.md). */
  avatarLive: boolean;
  prosody: { confidence: number; stability: number; affability: number } | null;
}

const initial: Snapshot = {
  connection: 'idle', closeCode: null, reconnectAttempt: 0, sessionId: null, resumed: false,
  state: 'listening', partial: '', turns: [], emotion: 'neutral', problems: [], micOn: false,
  inputMode: 'handsfree', pttActive: false, ttsMode: 'fast', voice: '', voiceProfileId: null,
  bargeIn: true, playedChunks: 0, receivedChunks: 0, speaking: false, avatarLive: false, prosody: null,
};

let problemSeq = 0;

export class Conversation {
  private snap: Snapshot = initial;
  private readonly listeners = new Set<() => void>();
  private conn: RealtimeConnection | null = null;
  private mic: MicCapture | null = null;
  private outCtx: AudioContext | null = null;
  private queue: PlaybackQueue | null = null;
  private readonly vad = new LevelVad();
  /** Turns the user cut off: their late audio chunks are dropped, not played. */
  private readonly cutTurns = new Set<string>();
  analyser: AnalyserNode | null = null;
  /** Face parameters from the avatar events, on the playback clock (`clock()`). */
  readonly animator = new AvatarAnimator();
  private avatarStream: AvatarStream | null = null;

  constructor(readonly api: ApiClient = new ApiClient('')) {}

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  getSnapshot = (): Snapshot => this.snap;

  private update(patch: Partial<Snapshot> | ((s: Snapshot) => Partial<Snapshot>)): void {
    const p = typeof patch === 'function' ? patch(this.snap) : patch;
    this.snap = { ...this.snap, ...p };
    for (const fn of this.listeners) fn();
  }

  private updateTurn(turnId: string | null, fn: (t: TurnView) => Partial<TurnView>): void {
    this.update((s) => {
      const turns = s.turns.slice();
      let i = turnId === null ? -1 : turns.findIndex((t) => t.turnId === turnId);
      if (i < 0) i = turns.findIndex((t) => t.turnId === null && !t.done);
      if (i < 0) {
        turns.push(newTurn(turnId, ''));
        i = turns.length - 1;
      }
      turns[i] = { ...turns[i], ...fn(turns[i]) };
      return { turns };
    });
  }

  problem(kind: Problem['kind'], code: string, message = '', traceId: string | null = null): void {
    const p: Problem = { id: ++problemSeq, kind, code, message, traceId };
    this.update((s) => ({ problems: [...s.problems.slice(-4), p] }));
  }

  dismiss(id: number): void {
    this.update((s) => ({ problems: s.problems.filter((p) => p.id !== id) }));
  }

  /** Creates a session, opens the socket and (hands-free) starts the microphone. Call from a click. */
  async start(): Promise<void> {
    this.ensureOutput();
    let created;
    try {
      created = await this.api.createSession();
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError(0, 'NETWORK', String(err));
      this.problem('error', e.code, e.message, e.traceId);
      return;
    }
    this.cutTurns.clear();
    this.update({ ...initial, inputMode: this.snap.inputMode, ttsMode: this.snap.ttsMode, voice: this.snap.voice,
      voiceProfileId: this.snap.voiceProfileId, bargeIn: this.snap.bargeIn, problems: this.snap.problems,
      sessionId: created.session_id, playedChunks: this.snap.playedChunks });
    const url = sessionSocketUrl(window.location, created.session_id);
    this.conn?.close();
    this.conn = new RealtimeConnection({
      url,
      protocols: sessionSocketProtocols(created.token),
      onMessage: (m) => this.onMessage(m),
      onAudio: (f) => this.playAudio(f.turn_id, f.seq, pcm16ToFloat(f.pcm), f.sr, f.text, f.mode),
      onStatus: (status, d) => {
        this.update({ connection: status, closeCode: d.code ?? null, reconnectAttempt: d.attempt ?? 0 });
        if (status === 'open') this.sendTtsMode();
        if (status === 'reconnecting' || status === 'failed') this.stopPlayback();
        if (status === 'failed' && d.code) this.problem('error', `close_${d.code}`);
      },
      onProtocolError: (e) => {
        // a newer server may add message types: log them, but only malformed known ones are errors
        if (e.reason.startsWith('unknown type')) console.warn(e.message);
        else this.problem('error', 'PROTOCOL', e.reason);
      },
    });
    this.conn.connect();
    this.avatarStream?.close();
    this.avatarStream = new AvatarStream({
      url: avatarSocketUrl(window.location, created.session_id, created.token),
      onEvent: (e) => this.animator.apply(e, this.clock()),
      onStatus: (open) => this.update({ avatarLive: open }),
    });
    this.avatarStream.connect();
    await this.startMic();
  }

  /** Seconds on the playback clock: mouth frames and audio chunks share it. */
  clock = (): number => this.outCtx?.currentTime ?? performance.now() / 1000;

  /** Diagnostics hooks (exposed on `window.__avatar` with `?debug=1`). */
  readonly debug = {
    dropConnection: (): void => this.conn?.drop(),
    sendRaw: (text: string): void => this.conn?.sendRaw(text),
  };

  async end(): Promise<void> {
    this.stopPlayback();
    await this.stopMic();
    this.conn?.close();
    this.conn = null;
    this.avatarStream?.close();
    this.avatarStream = null;
    this.update({ avatarLive: false });
  }

  private ensureOutput(): void {
    if (this.outCtx) {
      void this.outCtx.resume();
      return;
    }
    const ctx = new AudioContext({ latencyHint: 'interactive' });
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    analyser.smoothingTimeConstant = 0.3;
    analyser.connect(ctx.destination);
    this.outCtx = ctx;
    this.analyser = analyser;
    this.queue = new PlaybackQueue(ctx as unknown as PlaybackContextLike, analyser, {
      onChunkPlayed: (_c, total) => this.update({ playedChunks: total }),
      onIdle: () => this.update({ speaking: false }),
    });
    void ctx.resume();
  }

  async startMic(): Promise<void> {
    if (this.mic?.running) return;
    this.mic = new MicCapture((f) => this.onFrame(f), 100);
    try {
      await this.mic.start();
      this.update({ micOn: true });
    } catch (err) {
      this.mic = null;
      const name = err instanceof Error ? err.name : '';
      const code = err instanceof Error && err.message === 'MIC_UNSUPPORTED' ? 'MIC_UNSUPPORTED'
        : name === 'NotAllowedError' || name === 'SecurityError' ? 'MIC_DENIED' : 'MIC_DENIED';
      this.problem('error', code, err instanceof Error ? err.message : String(err));
      this.update({ micOn: false });
    }
  }

  async stopMic(): Promise<void> {
    const mic = this.mic;
    this.mic = null;
    this.update({ micOn: false, pttActive: false });
    await mic?.stop();
  }

  private onFrame(frame: CapturedFrame): void {
    const s = this.snap;
    const sending = s.inputMode === 'handsfree' || s.pttActive || frame.final;
    if (s.bargeIn && sending && this.vad.push(frame.level) && this.queue?.playing) this.interrupt();
    if (!sending || !this.conn) return;
    if (frame.pcm.length > 0) this.conn.sendAudio(frame.pcm);
    if (frame.final) this.conn.send({ type: 'end_of_utterance' });
  }

  setInputMode(mode: InputMode): void {
    this.update({ inputMode: mode, pttActive: false });
  }

  pttDown(): void {
    if (this.snap.inputMode !== 'ptt') return;
    if (this.queue?.playing) this.interrupt();
    this.update({ pttActive: true });
  }

  pttUp(): void {
    if (!this.snap.pttActive) return;
    this.update({ pttActive: false });
    // the worklet answers with its partial frame marked final, which sends end_of_utterance
    if (this.mic?.running) this.mic.flush();
    else this.conn?.send({ type: 'end_of_utterance' });
  }

  setBargeIn(on: boolean): void {
    this.update({ bargeIn: on });
  }

  setTtsMode(mode: TtsMode, voice = this.snap.voice, voiceProfileId = this.snap.voiceProfileId): void {
    this.update({ ttsMode: mode, voice, voiceProfileId });
    this.sendTtsMode();
  }

  private sendTtsMode(): void {
    const s = this.snap;
    if (!this.conn?.isOpen) return;
    this.conn.send({
      type: 'set_tts_mode', mode: s.ttsMode,
      ...(s.voice ? { voice: s.voice } : {}),
      ...(s.voiceProfileId ? { voice_profile_id: s.voiceProfileId } : {}),
    });
  }

  sendText(text: string): void {
    const t = text.trim();
    if (!t || !this.conn) return;
    if (this.queue?.playing) this.interrupt();
    // the server echoes typed text as a transcription_final, which adds the turn
    this.conn.send({ type: 'text_input', text: t });
  }

  /** Barge-in: stop the reply now and tell the server how much was heard. */
  interrupt(): void {
    const r = this.stopPlayback();
    if (r?.turnId) this.cutTurns.add(r.turnId);
    this.conn?.send({ type: 'interrupt', played_ms: r?.playedMs ?? 0, heard_text: r?.heardText ?? '' });
  }

  private stopPlayback(): ReturnType<PlaybackQueue['stop']> | null {
    const r = this.queue?.stop() ?? null;
    this.animator.stopTurn(r?.turnId ?? null);
    this.update({ speaking: false });
    return r;
  }

  async replayHq(turn: TurnView): Promise<void> {
    if (!turn.hqUrl) return;
    this.ensureOutput();
    const ctx = this.outCtx as AudioContext;
    try {
      const res = await fetch(turn.hqUrl);
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const audio = await ctx.decodeAudioData(await res.arrayBuffer());
      this.stopPlayback();
      this.queue?.enqueue({
        turnId: `${turn.turnId ?? turn.key}:hq`, samples: audio.getChannelData(0), sampleRate: audio.sampleRate,
        text: turn.ai, mode: 'hq',
      });
      this.update({ speaking: true, emotion: turn.emotion });
    } catch (err) {
      this.problem('error', 'HQ_LOAD', err instanceof Error ? err.message : String(err));
    }
  }

  /** Queues one reply chunk, whether it came as JSON or as a binary frame (docs/protocol.md). */
  playAudio(turnId: string, seq: number, samples: Float32Array, sampleRate: number, text: string, mode: TtsMode): void {
    if (this.cutTurns.has(turnId) || !this.queue) return;
    const start = this.queue.enqueue({ turnId, samples, sampleRate, text, mode });
    this.animator.chunkStarted(turnId, seq, start);
    this.update((s) => ({ receivedChunks: s.receivedChunks + 1, speaking: true }));
  }

  onMessage(m: ServerMessage): void {
    switch (m.type) {
      case 'session_state':
        this.update({ state: m.state, resumed: m.resumed, sessionId: m.session_id });
        if (m.resumed) this.problem('notice', 'RESUMED');
        break;
      case 'speech_started':
        if (this.snap.bargeIn && this.queue?.playing) this.interrupt();
        break;
      case 'transcription_partial':
        this.update({ partial: m.text });
        break;
      case 'transcription_final':
        this.update((s) => ({
          partial: '',
          turns: m.text.trim() ? [...s.turns, { ...newTurn(null, m.text), lowConfidence: m.low_confidence }] : s.turns,
        }));
        break;
      case 'turn_started':
        this.updateTurn(null, () => ({ turnId: m.turn_id }));
        break;
      case 'emotion':
        this.updateTurn(m.turn_id, () => ({ emotion: m.emotion }));
        this.update({ emotion: m.emotion });
        break;
      case 'llm_token':
        this.updateTurn(m.turn_id, (t) => ({ ai: t.ai + m.token }));
        break;
      case 'audio_chunk': {
        if (this.cutTurns.has(m.turn_id) || !this.queue) break;
        let samples: Float32Array;
        try {
          samples = pcm16ToFloat(bytesToPcm16(base64ToBytes(m.data)));
        } catch {
          this.problem('error', 'PROTOCOL', 'audio_chunk.data');
          break;
        }
        this.playAudio(m.turn_id, m.seq, samples, m.sr, m.text, m.mode);
        break;
      }
      case 'turn_completed':
        this.updateTurn(m.turn_id, () => ({
          ...(m.text ? { ai: m.text } : {}), emotion: m.emotion, interrupted: m.interrupted, done: true,
        }));
        break;
      case 'interrupted':
        this.cutTurns.add(m.turn_id);
        this.stopPlayback();
        this.updateTurn(m.turn_id, () => ({ interrupted: true }));
        break;
      case 'hq_ready':
        this.updateTurn(m.turn_id, () => ({ hqUrl: m.url }));
        break;
      case 'prosody_analysis':
        if (m.reliable) this.update({ prosody: m.scores });
        break;
      case 'notice':
        this.problem('notice', m.code, m.message);
        break;
      case 'error':
        if (m.code === 'VRAM_EXHAUSTED') this.update({ ttsMode: 'fast' });
        this.problem('error', m.code, m.message, m.trace_id);
        break;
      case 'pong':
      case 'heartbeat':
        break;
    }
  }
}

function newTurn(turnId: string | null, user: string): TurnView {
  return {
    key: `t${++problemSeq}`, turnId, user, ai: '', emotion: 'neutral', interrupted: false,
    lowConfidence: false, hqUrl: null, done: false,
  };
}
