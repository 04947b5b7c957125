// End-to-end: Debian's Chromium (no browser download) with a fake microphone playing a WAV talks to
// a running AVATAR server. Prints one JSON line with what the page showed; the pytest wrapper
// (tests/browser/test_web_app.py) starts the server and judges the result.
//
// Env: AVATAR_URL (base URL), AVATAR_WAV (16-bit PCM WAV), AVATAR_ARTIFACTS (screenshot folder),
//      CHROMIUM (default /usr/bin/chromium), AVATAR_E2E_TIMEOUT_MS (per step, default 240000).
import { join } from 'node:path';
import { e2eEnv, launchChromium } from './browser.mjs';

const { base, wav, artifacts } = e2eEnv();
const timeout = Number(process.env.AVATAR_E2E_TIMEOUT_MS ?? 240000);

const browser = await launchChromium(wav, { noloop: true });
const result = { ok: false, steps: [], console: [] };
const step = (name) => {
  result.steps.push(name);
  console.error(`[e2e] ${name}`);
};
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 820 }, locale: 'en-US' });
  await context.grantPermissions(['microphone'], { origin: base });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') result.console.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`));
  page.setDefaultTimeout(timeout);

  // Sign in as `avatar up` lets a newcomer: the one-time link it printed (docs/security.md).
  if (process.env.AVATAR_SIGN_IN_URL) await page.goto(process.env.AVATAR_SIGN_IN_URL, { waitUntil: 'networkidle' });

  await page.goto(base, { waitUntil: 'networkidle' });
  step('loaded');
  // record how far the avatar's mouth opens (it follows the reply's audio level)
  await page.evaluate(() => {
    window.__mouthMax = 0;
    setInterval(() => {
      const v = Number(document.querySelector('[data-testid="avatar"]')?.style.getPropertyValue('--mouth-open') || 0);
      window.__mouthMax = Math.max(window.__mouthMax, v);
    }, 20);
  });
  // high-quality mode: the fast reply plays first, then the HQ version can be replayed
  await page.getByTestId('tts-mode').selectOption('hq');
  await page.getByTestId('start').click();
  await page.waitForSelector('[data-testid="talk"][data-connection="open"]');
  step('connected');
  await page.waitForFunction(() => document.querySelector('[data-testid="mic"]')?.getAttribute('aria-pressed') === 'true');
  step('microphone on');

  const userText = page.getByTestId('user-text').first();
  await userText.waitFor();
  result.transcript = (await userText.innerText()).replace(/^You\s*/, '').trim();
  step('transcript shown');
  // the utterance is in; switch the microphone off so nothing else is heard while the reply plays
  await page.getByTestId('mic').click();

  // the reply: text streams in, then audio chunks play to their end
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="talk"]')?.dataset.playedChunks ?? 0) >= 1);
  step('reply audio played');
  await page.waitForFunction(() => {
    const talk = document.querySelector('[data-testid="talk"]');
    return talk?.dataset.state === 'listening' && Number(talk.dataset.receivedChunks) > 0 &&
      Number(talk.dataset.playedChunks) >= Number(talk.dataset.receivedChunks);
  });
  step('reply finished');
  const talk = page.getByTestId('talk');
  result.playedChunks = Number(await talk.getAttribute('data-played-chunks'));
  result.receivedChunks = Number(await talk.getAttribute('data-received-chunks'));
  result.sessionId = await talk.getAttribute('data-session-id');
  result.reply = (await page.getByTestId('ai-text').first().innerText()).replace(/^Avatar\s*/, '').trim();
  result.emotion = await page.getByTestId('avatar').getAttribute('data-emotion');
  result.errors = await page.getByTestId('error').allInnerTexts();
  result.mouthMax = await page.evaluate(() => window.__mouthMax);

  await page.getByTestId('replay-hq').click();
  await page.waitForFunction((n) => Number(document.querySelector('[data-testid="talk"]')?.dataset.playedChunks) > n,
    result.playedChunks);
  result.playedAfterHq = Number(await talk.getAttribute('data-played-chunks'));
  step('HQ version replayed');
  result.errors = await page.getByTestId('error').allInnerTexts();
  await page.screenshot({ path: join(artifacts, 'web-app-talk.png'), fullPage: true });

  // the same view on a phone-sized screen, in Korean
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByTestId('lang').selectOption('ko');
  await page.screenshot({ path: join(artifacts, 'web-app-talk-phone-ko.png'), fullPage: true });
  result.koreanStart = await page.getByTestId('tab-talk').innerText();
  await page.getByTestId('lang').selectOption('en');
  await page.setViewportSize({ width: 1200, height: 820 });

  await page.getByTestId('tab-history').click();
  const item = page.locator(`[data-testid="session-item"][data-session-id="${result.sessionId}"]`);
  await item.waitFor();
  await item.click();
  const historyTurn = page.getByTestId('history-turn').first();
  await historyTurn.waitFor();
  result.history = await page.getByTestId('history-turn').allInnerTexts();
  step('history shows the turn');
  await page.screenshot({ path: join(artifacts, 'web-app-history.png'), fullPage: true });
  result.ok = true;
} catch (err) {
  result.error = String(err?.stack ?? err);
  try {
    const pages = browser.contexts()[0]?.pages() ?? [];
    if (pages[0]) {
      await pages[0].screenshot({ path: join(artifacts, 'web-app-failure.png'), fullPage: true });
      result.html = (await pages[0].content()).slice(0, 4000);
    }
  } catch {
    // the page itself is gone
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
