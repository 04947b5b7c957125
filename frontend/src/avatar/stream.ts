/**
 * The browser's connection to `WS /ws/{session_id}/avatar`: events go to an AvatarAnimator;
 * reconnects with the same backoff as the conversation socket, and stops for good on a token or
 * session error or the end of the conversation (4401/4404/4410).
 */
import { Backoff } from '../protocol/backoff';
import { type AvatarEvent, parseAvatarEvent } from './events';

export interface AvatarStreamOptions {
  url: string;
  onEvent: (event: AvatarEvent) => void;
  onStatus?: (open: boolean) => void;
  socketFactory?: (url: string) => WebSocket;
}

export class AvatarStream {
  private ws: WebSocket | null = null;
  private closed = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly backoff = new Backoff();
  open = false;

  constructor(private readonly opts: AvatarStreamOptions) {}

  connect(): void {
    if (this.closed) return;
    const ws = (this.opts.socketFactory ?? ((u) => new WebSocket(u)))(this.opts.url);
    this.ws = ws;
    ws.onopen = () => {
      this.open = true;
      this.backoff.reset();
      this.opts.onStatus?.(true);
    };
    ws.onmessage = (e: MessageEvent) => {
      if (typeof e.data !== 'string') return;
      const event = parseAvatarEvent(e.data);
      if (event) this.opts.onEvent(event);
    };
    ws.onclose = (e: CloseEvent) => {
      this.open = false;
      this.opts.onStatus?.(false);
      if (this.closed || e.code === 4401 || e.code === 4404 || e.code === 4410) return;
      this.timer = setTimeout(() => this.connect(), this.backoff.next());
    };
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.ws?.close();
    this.ws = null;
  }
}
