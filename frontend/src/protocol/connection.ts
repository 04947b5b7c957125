/**
 * One realtime WebSocket with automatic reconnect (exponential backoff) and session resume: the
 * same URL and token are reused, and the server answers with `session_state{resumed:true}`.
 * The token travels in the `Sec-WebSocket-Protocol` header, never in the URL (docs/protocol.md,
 * Authentication), so it stays out of access logs and browser history.
 */
import { bytesToBase64, pcm16ToBytes } from '../audio/pcm';
import { Backoff } from './backoff';
import { type AudioFrame, decodeAudioOut, encodeAudioIn } from './binaryFrames';
import { type ClientMessage, parseServerMessage, ProtocolError, type ServerMessage } from './messages';

export type ConnectionStatus = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' | 'failed';

/** Close codes after which reconnecting cannot help (docs/protocol.md). */
export const FATAL_CLOSE_CODES = new Set([4401, 4404, 1009]);

export interface SocketLike {
  readonly readyState: number;
  binaryType: string;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
}

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

export interface ConnectionOptions {
  url: string;
  onMessage(msg: ServerMessage): void;
  /** Reply audio that arrived as a binary frame (docs/protocol.md, "Binary audio frames"). */
  onAudio?(frame: AudioFrame): void;
  onStatus(status: ConnectionStatus, detail: { code?: number; attempt?: number; delayMs?: number }): void;
  onProtocolError?(err: ProtocolError): void;
  /** Subprotocols to offer (`sessionSocketProtocols(token)` carries the session token). */
  protocols?: string[];
  createSocket?: (url: string, protocols?: string[]) => SocketLike;
  timers?: Timers;
  backoff?: Backoff;
  heartbeatMs?: number;
  maxAttempts?: number;
  now?: () => number;
}

const OPEN = 1;

const defaultTimers: Timers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (h) => globalThis.clearTimeout(h as ReturnType<typeof setTimeout>),
  setInterval: (fn, ms) => globalThis.setInterval(fn, ms),
  clearInterval: (h) => globalThis.clearInterval(h as ReturnType<typeof setInterval>),
};

export class RealtimeConnection {
  private socket: SocketLike | null = null;
  private status: ConnectionStatus = 'idle';
  private retryTimer: unknown = null;
  private heartbeat: unknown = null;
  private closedByUser = false;
  /** The server confirmed binary audio frames on the current socket (`session_state`). */
  private binaryAudio = false;
  private audioSeq = 0;
  /** When the current socket opened: microphone timestamps count from it (within +-10^12 ms). */
  private openedAt = 0;
  private readonly pending: string[] = [];
  private readonly timers: Timers;
  private readonly backoff: Backoff;
  private readonly createSocket: (url: string, protocols?: string[]) => SocketLike;

  constructor(private readonly opts: ConnectionOptions) {
    this.timers = opts.timers ?? defaultTimers;
    this.backoff = opts.backoff ?? new Backoff();
    this.createSocket =
      opts.createSocket ?? ((url, protocols) => new WebSocket(url, protocols) as unknown as SocketLike);
  }

  get state(): ConnectionStatus {
    return this.status;
  }

  get isOpen(): boolean {
    return this.socket?.readyState === OPEN;
  }

  connect(): void {
    this.closedByUser = false;
    this.open(false);
  }

  private setStatus(s: ConnectionStatus, detail: { code?: number; attempt?: number; delayMs?: number } = {}): void {
    this.status = s;
    this.opts.onStatus(s, detail);
  }

  private open(isRetry: boolean): void {
    this.setStatus(isRetry ? 'reconnecting' : 'connecting', { attempt: this.backoff.attempts });
    const ws = this.createSocket(this.opts.url, this.opts.protocols);
    ws.binaryType = 'arraybuffer';
    this.socket = ws;
    this.binaryAudio = false;
    ws.onopen = () => {
      this.openedAt = (this.opts.now ?? Date.now)();
      this.backoff.reset();
      this.setStatus('open');
      while (this.pending.length > 0 && ws.readyState === OPEN) ws.send(this.pending.shift() as string);
      const t = this.opts.now ?? Date.now;
      this.heartbeat = this.timers.setInterval(() => this.send({ type: 'ping', t: t() }), this.opts.heartbeatMs ?? 15000);
    };
    ws.onmessage = (ev) => {
      if (ev.data instanceof ArrayBuffer) {
        let frame: AudioFrame;
        try {
          frame = decodeAudioOut(ev.data);
        } catch (err) {
          this.opts.onProtocolError?.(new ProtocolError(err instanceof Error ? err.message : 'bad binary frame'));
          return;
        }
        this.opts.onAudio?.(frame);
        return;
      }
      if (typeof ev.data !== 'string') return;
      let msg: ServerMessage;
      try {
        msg = parseServerMessage(ev.data);
      } catch (err) {
        if (err instanceof ProtocolError) this.opts.onProtocolError?.(err);
        else throw err;
        return;
      }
      if (msg.type === 'session_state' && msg.audio_frames === 'binary' && this.socket === ws) this.binaryAudio = true;
      this.opts.onMessage(msg);
    };
    ws.onerror = () => {
      // onclose follows and decides about reconnecting
    };
    ws.onclose = (ev) => {
      if (this.socket !== ws) return;
      this.socket = null;
      this.stopHeartbeat();
      if (this.closedByUser) {
        this.setStatus('closed', { code: ev.code });
        return;
      }
      if (FATAL_CLOSE_CODES.has(ev.code) || this.backoff.attempts >= (this.opts.maxAttempts ?? 12)) {
        this.setStatus('failed', { code: ev.code });
        return;
      }
      const delayMs = this.backoff.next();
      this.setStatus('reconnecting', { code: ev.code, attempt: this.backoff.attempts, delayMs });
      this.retryTimer = this.timers.setTimeout(() => {
        this.retryTimer = null;
        this.open(true);
      }, delayMs);
    };
  }

  private stopHeartbeat(): void {
    if (this.heartbeat !== null) this.timers.clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  /**
   * Sends a control message; while reconnecting it is kept (bounded) and sent on reopen.
   * Audio is never queued: stale microphone audio after a reconnect would only confuse the VAD.
   */
  send(msg: ClientMessage): boolean {
    const text = JSON.stringify(msg);
    if (this.socket && this.socket.readyState === OPEN) {
      this.socket.send(text);
      return true;
    }
    if (msg.type !== 'audio_chunk' && msg.type !== 'ping' && this.pending.length < 32) this.pending.push(text);
    return false;
  }

  /**
   * Sends microphone PCM16: a binary frame once the server confirmed binary audio frames, else an
   * `audio_chunk` JSON message with base64 (docs/protocol.md). Dropped when not connected.
   */
  sendAudio(pcm: Int16Array, sampleRate = 16000): boolean {
    if (!this.socket || this.socket.readyState !== OPEN) return false;
    const timestamp = (this.opts.now ?? Date.now)() - this.openedAt;
    if (this.binaryAudio) {
      this.socket.send(encodeAudioIn(pcm, sampleRate, this.audioSeq++, timestamp));
    } else {
      this.socket.send(JSON.stringify({ type: 'audio_chunk', data: bytesToBase64(pcm16ToBytes(pcm)), sr: sampleRate, timestamp }));
    }
    return true;
  }

  /** Sends a raw text frame (diagnostics: lets a test show how the server answers bad input). */
  sendRaw(text: string): void {
    this.socket?.send(text);
  }

  /** Drops the socket as a network failure would (it reconnects); diagnostics and tests. */
  drop(code = 4000): void {
    this.socket?.close(code, 'dropped');
  }

  close(): void {
    this.closedByUser = true;
    if (this.retryTimer !== null) this.timers.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.stopHeartbeat();
    const ws = this.socket;
    if (ws) ws.close(1000, 'bye');
    else this.setStatus('closed');
  }
}

/** The protocol version the server selects when a client offers it. */
export const SUBPROTOCOL = 'avatar.v1';

/**
 * The same-origin WebSocket URL of a session (works behind nginx and the Vite proxy alike); it
 * asks for binary audio frames, used once the server confirms them. It carries no token: pass
 * `sessionSocketProtocols(token)` as the socket's protocols.
 */
export function sessionSocketUrl(loc: { protocol: string; host: string }, sessionId: string): string {
  const scheme = loc.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${loc.host}/ws/${encodeURIComponent(sessionId)}?v=1&audio=binary`;
}

/** The subprotocols that authenticate a session's socket: `avatar.v1` and `avatar.token.<token>`. */
export function sessionSocketProtocols(token: string): string[] {
  if (!/^[A-Za-z0-9._~-]+$/.test(token)) throw new Error('the session token has characters a subprotocol cannot carry');
  return [SUBPROTOCOL, `avatar.token.${token}`];
}
