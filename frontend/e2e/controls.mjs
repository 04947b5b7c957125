// Browser check of the controls around a conversation, against a server with scripted engines:
// push-to-talk, the stop button (barge-in), a server error shown, a dropped socket that
// reconnects and resumes the session, and a typed message afterwards. Prints one JSON line.
//
// Env: AVATAR_URL, AVATAR_WAV, AVATAR_ARTIFACTS, CHROMIUM, AVATAR_E2E_TIMEOUT_MS (default 60000).
import { join } from 'node:path';
import { e2eEnv, launchChromium } from './browser.mjs';

const { base, wav, artifacts } = e2eEnv();
const timeout = Number(process.env.AVATAR_E2E_TIMEOUT_MS ?? 60000);

const browser = await launchChromium(wav);
const result = { ok: false, steps: [], console: [] };
const step = (name) => {
  result.steps.push(name);
  console.error(`[controls] ${name}`);
};
const talkAttr = (page, name) => page.getByTestId('talk').getAttribute(`data-${name}`);
try {
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  await context.grantPermissions(['microphone'], { origin: base });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') result.console.push(m.text());
  });
  page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`));
  // binary audio frames on the conversation socket (docs/protocol.md, "Binary audio frames")
  result.binaryFramesSent = 0;
  result.binaryFramesReceived = 0;
  page.on('websocket', (ws) => {
    if (!/\/ws\/[^/]+\?/.test(ws.url())) return;
    ws.on('framesent', (f) => { if (typeof f.payload !== 'string') result.binaryFramesSent += 1; });
    ws.on('framereceived', (f) => { if (typeof f.payload !== 'string') result.binaryFramesReceived += 1; });
  });
  page.setDefaultTimeout(timeout);
  if (process.env.AVATAR_SIGN_IN_URL) {
    // Not signed in yet: the sign-in form, not the app (docs/security.md).
    await page.goto(base, { waitUntil: 'networkidle' });
    await page.getByTestId('sign-in').waitFor();
    await page.screenshot({ path: join(artifacts, 'web-app-sign-in.png') });
    step('sign-in form');
    result.console.length = 0; // the 401 of GET /api/v1/me that showed the form
    // Sign in as `avatar up` lets a newcomer: the one-time link it printed.
    await page.goto(process.env.AVATAR_SIGN_IN_URL, { waitUntil: 'networkidle' });
  }
  await page.goto(`${base}/?debug=1`, { waitUntil: 'networkidle' });

  // push-to-talk: nothing is sent until the button is held; releasing ends the utterance
  await page.getByRole('radio', { name: 'Push to talk' }).check();
  await page.getByTestId('start').click();
  await page.waitForSelector('[data-testid="talk"][data-connection="open"]');
  await page.waitForFunction(() => document.querySelector('[data-testid="mic"]')?.getAttribute('aria-pressed') === 'true');
  const ptt = page.getByTestId('ptt');
  await ptt.hover();
  await page.mouse.down();
  await page.waitForTimeout(1500);
  await page.mouse.up();
  await page.getByTestId('user-text').first().waitFor();
  result.pttTranscript = await page.getByTestId('user-text').first().innerText();
  step('push-to-talk utterance transcribed');

  // stop button while the reply plays
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="talk"]')?.dataset.playedChunks) >= 2);
  await page.getByTestId('stop').click();
  await page.waitForFunction(() => document.querySelector('[data-testid="ai-text"]')?.textContent?.includes('(interrupted)'));
  const playedAtStop = Number(await talkAttr(page, 'played-chunks'));
  await page.waitForTimeout(800);
  result.playedAfterStop = Number(await talkAttr(page, 'played-chunks')) - playedAtStop;
  result.receivedChunks = Number(await talkAttr(page, 'received-chunks'));
  result.stopDisabled = await page.getByTestId('stop').isDisabled();
  result.sessionId = await talkAttr(page, 'session-id');
  step('stop button interrupted the reply');

  // a server error event is shown as a clear message
  await page.evaluate(() => window.__avatar.debug.sendRaw('{"type":"telepathy"}'));
  const err = page.locator('[data-testid="error"][data-code="UNKNOWN_MESSAGE_TYPE"]');
  await err.waitFor();
  result.errorText = await err.innerText();
  step('error shown');

  // the socket drops: the page reconnects with the same token and the session resumes
  await page.evaluate(() => window.__avatar.debug.dropConnection());
  await page.waitForSelector('[data-testid="connection"][data-status="reconnecting"]');
  await page.waitForSelector('[data-testid="connection"][data-status="open"]');
  await page.locator('[data-testid="notice"][data-code="RESUMED"]').waitFor();
  result.sessionAfterReconnect = await talkAttr(page, 'session-id');
  step('reconnected and resumed');

  await page.getByRole('radio', { name: 'Hands-free' }).check();
  await page.getByTestId('mic').click(); // microphone off: only the typed message goes in
  await page.getByPlaceholder('Type a message…').fill('How are you?');
  await page.getByRole('button', { name: 'Send' }).click();
  await page.waitForFunction(() => {
    const ai = document.querySelectorAll('[data-testid="ai-text"]');
    return ai.length === 2 && ai[1].getAttribute('data-done') === 'true'; // the whole reply, not its first token
  });
  result.turns = await page.getByTestId('turn').allInnerTexts();
  step('typed turn after reconnect');

  // thumbs up on the reply (docs/live.md, "Feedback"): shown as rated once the server stored it
  const lastTurn = page.getByTestId('turn').nth(1);
  await lastTurn.getByTestId('rate-up').click();
  await lastTurn.locator('[data-testid="rate"][data-rating="up"]').waitFor();
  result.ratedTurnId = await lastTurn.getAttribute('data-turn-id');
  step('reply rated');
  await page.screenshot({ path: join(artifacts, 'web-app-controls.png'), fullPage: true });
  result.ok = true;
} catch (err) {
  result.error = String(err?.stack ?? err);
  const p = browser.contexts()[0]?.pages()[0];
  if (p) await p.screenshot({ path: join(artifacts, 'web-app-controls-failure.png'), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
