import { createElement } from 'react';
import { renderToString } from 'react-dom/server';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { RateReply } from '../src/components/RateReply';
import { LangContext } from '../src/i18n/context';
import { LiveApi, parseAvatar, parseQueue, parseReplies, parseStatus } from '../src/live/api';
import { type ConsoleSnapshot, LiveConsole } from '../src/live/console';
import { LiveView } from '../src/live/LivePage';
import { ApiClient } from '../src/protocol/api';

const STATUS = { platforms: [{ platform: 'twitch', state: 'connected', connects: 2, running: true }], queued: 1, paused: false, replies: 1 };
const QUEUE = {
  queued: 1,
  paused: false,
  messages: [
    { id: 1, platform: 'twitch', user_id: '11', user: 'Amy', text: 'hello avatar', amount: 0, is_streamer: false,
      is_moderator: false, verdict: null, status: 'answered', reason: null, turn_id: 't-1', at: '2026-11-30T12:00:00Z' },
    { id: 2, platform: 'twitch', user_id: '12', user: 'spam', text: 'www.spam.example', amount: 0, is_streamer: false,
      is_moderator: false, verdict: 'link', status: 'dropped', reason: 'link', turn_id: null, at: '2026-11-30T12:00:01Z' },
    { id: 3, platform: 'chzzk', user_id: '13', user: 'Host', text: 'welcome', amount: 1000, is_streamer: true,
      is_moderator: false, verdict: null, status: 'queued', reason: null, turn_id: null, at: '2026-11-30T12:00:02Z' },
  ],
};
const REPLIES = { replies: [{ id: 1, turn_id: 't-1', to_user: 'Amy', text: 'Hi Amy!', emotion: 'happy', at: '2026-11-30T12:00:03Z' }] };
const AVATAR = { enabled: true, state: 'running', connected: true, authenticated: true, model_loaded: true, model_name: 'Hana', last_error: '', follows_live: true };

interface Call {
  method: string;
  url: string;
  body: unknown;
  csrf: string | null;
}

/** A fetch that answers the live routes and records every call. */
function fakeServer(overrides: Record<string, { status: number; body: unknown }> = {}) {
  const calls: Call[] = [];
  const routes: Record<string, unknown> = {
    'GET /api/v1/live/status': STATUS,
    'GET /api/v1/live/queue': QUEUE,
    'GET /api/v1/live/replies': REPLIES,
    'GET /api/v1/live/avatar': AVATAR,
  };
  const fetchFn = vi.fn(async (url: string, init: RequestInit = {}) => {
    const method = (init.method ?? 'GET').toUpperCase();
    const headers = new Headers(init.headers ?? {});
    calls.push({ method, url, body: init.body ? JSON.parse(String(init.body)) : null, csrf: headers.get('X-CSRF-Token') });
    const key = `${method} ${url}`;
    const over = overrides[key];
    if (over) return new Response(JSON.stringify(over.body), { status: over.status });
    if (key in routes) return new Response(JSON.stringify(routes[key]), { status: 200 });
    return new Response(method === 'POST' ? '' : 'null', { status: method === 'POST' ? 202 : 404 });
  });
  return { calls, fetchFn };
}

describe('live API parsing', () => {
  it('reads status, queue, replies and the avatar state', () => {
    expect(parseStatus(STATUS).platforms[0]).toEqual({ platform: 'twitch', state: 'connected', connects: 2, running: true });
    const queue = parseQueue(QUEUE);
    expect(queue.map((m) => [m.id, m.status, m.verdict])).toEqual([[1, 'answered', null], [2, 'dropped', 'link'], [3, 'queued', null]]);
    expect(queue[2]).toMatchObject({ isStreamer: true, amount: 1000, userId: '13' });
    expect(parseReplies(REPLIES)[0]).toEqual({ id: 1, turnId: 't-1', toUser: 'Amy', text: 'Hi Amy!', emotion: 'happy' });
    expect(parseAvatar(AVATAR)).toMatchObject({ enabled: true, connected: true, modelName: 'Hana', followsLive: true });
    expect(parseQueue({ nothing: 1 })).toEqual([]);
    expect(parseStatus(null)).toEqual({ platforms: [], queued: 0, paused: false, replies: 0 });
  });
});

describe('LiveConsole', () => {
  beforeEach(() => {
    vi.stubGlobal('document', { cookie: 'other=1; avatar_csrf=tok%3D1' });
  });
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it('polls the live routes into one snapshot', async () => {
    const { fetchFn } = fakeServer();
    vi.stubGlobal('fetch', fetchFn);
    const live = new LiveConsole(new LiveApi(''), async () => undefined);
    const seen: ConsoleSnapshot[] = [];
    live.subscribe(() => seen.push(live.getSnapshot()));
    await live.refresh();
    const snap = live.getSnapshot();
    expect(snap.loaded).toBe(true);
    expect(snap.unavailable).toBeNull();
    expect(snap.messages).toHaveLength(3);
    expect(snap.replies[0].turnId).toBe('t-1');
    expect(snap.avatar?.followsLive).toBe(true);
    expect(seen.length).toBeGreaterThan(0);
  });

  it('sends each action with the CSRF token and refreshes', async () => {
    const { calls, fetchFn } = fakeServer();
    vi.stubGlobal('fetch', fetchFn);
    const live = new LiveConsole(new LiveApi(''), async () => undefined);
    await live.answer(3);
    await live.skip(3);
    await live.ban(parseQueue(QUEUE)[1]);
    await live.setPaused(true);
    await live.setConnected('twitch', false);
    await live.setConnected('chzzk', true);
    await live.say('Thanks for the follow!', 'happy');
    const posts = calls.filter((c) => c.method === 'POST');
    expect(posts.map((c) => c.url)).toEqual([
      '/api/v1/live/queue/3/answer',
      '/api/v1/live/queue/3/skip',
      '/api/v1/live/ban',
      '/api/v1/live/pause',
      '/api/v1/live/platforms/twitch/disconnect',
      '/api/v1/live/platforms/chzzk/connect',
      '/api/v1/live/say',
    ]);
    expect(posts.every((c) => c.csrf === 'tok=1')).toBe(true);
    expect(posts[2].body).toEqual({ platform: 'twitch', user_id: '12' });
    expect(posts[3].body).toEqual({ paused: true });
    expect(posts[6].body).toEqual({ text: 'Thanks for the follow!', emotion: 'happy' });
    expect(calls.filter((c) => c.url === '/api/v1/live/queue' && c.method === 'GET')).toHaveLength(7);
    expect(live.getSnapshot().error).toBeNull();
  });

  it('shows a refused action and says why the console is unavailable', async () => {
    const { fetchFn } = fakeServer({
      'POST /api/v1/live/queue/1/answer': { status: 409, body: { error: { code: 'CONFLICT', message: 'chat message 1 is already answered' } } },
    });
    vi.stubGlobal('fetch', fetchFn);
    const live = new LiveConsole(new LiveApi(''), async () => undefined);
    await live.answer(1);
    expect(live.getSnapshot().error).toBe('chat message 1 is already answered');

    const off = fakeServer({
      'GET /api/v1/live/status': { status: 404, body: { error: { code: 'NOT_FOUND', message: 'live mode is off' } } },
    });
    vi.stubGlobal('fetch', off.fetchFn);
    const other = new LiveConsole(new LiveApi(''), async () => undefined);
    await other.refresh();
    expect(other.getSnapshot().unavailable).toBe('live mode is off');
  });

  it('rates a live reply through the feedback route and remembers it', async () => {
    const { calls, fetchFn } = fakeServer({
      'POST /api/v1/turns/t-1/feedback': { status: 200, body: { turn_id: 't-1', rating: 'down', comment: 'too short', at: 'x' } },
    });
    vi.stubGlobal('fetch', fetchFn);
    const api = new ApiClient('');
    const live = new LiveConsole(new LiveApi(''), (id, r, c) => api.rateTurn(id, r, c));
    await live.rate('t-1', 'down', 'too short');
    const post = calls.find((c) => c.url === '/api/v1/turns/t-1/feedback');
    expect(post?.body).toEqual({ rating: 'down', comment: 'too short' });
    expect(post?.csrf).toBe('tok=1');
    expect(live.getSnapshot().ratings).toEqual({ 't-1': 'down' });
  });

  it('passes a refused rating on', async () => {
    const { fetchFn } = fakeServer({
      'POST /api/v1/turns/t-9/feedback': { status: 404, body: { error: { code: 'NOT_FOUND', message: 'turn t-9 not found' } } },
    });
    vi.stubGlobal('fetch', fetchFn);
    const api = new ApiClient('');
    const live = new LiveConsole(new LiveApi(''), (id, r, c) => api.rateTurn(id, r, c));
    await expect(live.rate('t-9', 'up', '')).rejects.toThrow('turn t-9 not found');
    expect(live.getSnapshot().ratings).toEqual({});
  });
});

function render(snap: ConsoleSnapshot, lang: 'en' | 'ko' = 'en'): string {
  const live = new LiveConsole(new LiveApi(''), async () => undefined);
  return renderToString(createElement(LangContext.Provider, { value: lang }, createElement(LiveView, { snap, live })));
}

describe('the director console view', () => {
  const snap: ConsoleSnapshot = {
    loaded: true, unavailable: null, error: null, status: parseStatus(STATUS), messages: parseQueue(QUEUE),
    replies: parseReplies(REPLIES), avatar: parseAvatar(AVATAR), ratings: { 't-1': 'up' },
  };

  it('lists the chat newest first with verdicts and the actions each may take', () => {
    const html = render(snap);
    const ids = [...html.matchAll(/data-testid="live-message" data-id="(\d+)"/g)].map((m) => m[1]);
    expect(ids).toEqual(['3', '2', '1']);
    expect(html).toContain('not answered: link');
    expect(html).toContain('streamer');
    expect(html).toContain('+<!-- -->1000');
    // the answered message cannot be answered again; the dropped one can (the director overrides)
    const answered = html.slice(html.indexOf('data-id="1"'));
    expect(answered).toMatch(/data-testid="live-answer" disabled/);
    const dropped = html.slice(html.indexOf('data-id="2"'), html.indexOf('data-id="1"'));
    expect(dropped).not.toMatch(/data-testid="live-answer" disabled/);
    expect(dropped).toMatch(/data-testid="live-skip" disabled/);
  });

  it('shows the platforms, the pause, the avatar bridge and the rated reply', () => {
    const html = render(snap);
    expect(html).toMatch(/data-platform="twitch" data-state="connected" data-running="true"/);
    expect(html).toContain('Disconnect');
    expect(html).toContain('Pause the AI');
    expect(html).toMatch(/data-testid="live-avatar" data-state="running" data-connected="true" data-follows="true"/);
    expect(html).toContain('Hana');
    expect(html).toContain('Hi Amy!');
    expect(html).toMatch(/data-testid="rate" data-turn-id="t-1" data-rating="up"/);
    expect(render({ ...snap, status: { ...snap.status!, paused: true } })).toContain('Resume the AI');
    expect(render(snap, 'ko')).toContain('답하기');
  });

  it('says why there is no console', () => {
    const html = render({ ...snap, unavailable: 'live mode is off' });
    expect(html).toContain('data-available="false"');
    expect(html).toContain('live mode is off');
  });
});

describe('RateReply', () => {
  it('renders thumbs up/down with the current rating pressed', () => {
    const html = renderToString(createElement(RateReply, { turnId: 'x', rated: 'down', onRate: async () => undefined }));
    expect(html).toMatch(/data-testid="rate-up"/);
    expect(html).toMatch(/aria-pressed="true"[^>]*data-testid="rate-down"/);
    expect(html).toMatch(/aria-pressed="false"[^>]*data-testid="rate-up"/);
    expect(html).toContain('Comment');
    const none = renderToString(createElement(RateReply, { turnId: 'x', onRate: async () => undefined }));
    expect(none).toContain('data-rating=""');
    expect(none).not.toContain('rate-comment');
  });
});

describe('the export panel', () => {
  it('builds the download query and reads the validation summary', async () => {
    const { exportQuery, parseSummary, ExportPanel } = await import('../src/live/ExportPanel');
    expect(exportQuery('down', 'live')).toBe('rating=down&source=live');
    expect(parseSummary({ lines: 2, rejected: [{ turn_id: 't', reason: 'an empty message' }] })).toEqual({
      lines: 2, rejected: [{ turnId: 't', reason: 'an empty message' }],
    });
    expect(parseSummary(null)).toEqual({ lines: 0, rejected: [] });
    const html = renderToString(createElement(ExportPanel, {}));
    expect(html).toContain('href="/api/v1/admin/export/finetune?rating=up&amp;source=all"');
    expect(html).toContain('Download JSONL');
  });
});
