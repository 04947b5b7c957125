// End-to-end for the director console, the web app's "Live" tab (docs/live.md, "Director
// console"), signed in as the admin through the one-time link: pause the AI, see the chat with the
// filters' verdicts, answer a held-back message and see the reply (console and overlay state),
// rate it, say a typed line, disconnect and reconnect the platform, and rate the live reply again
// from the History tab. Prints one JSON line; tests/browser/test_live_console.py starts the server
// and the stand-in Twitch chat (it sends the chat once the AI is paused) and judges the result.
//
// Env: AVATAR_URL, AVATAR_WAV (for the shared launcher), AVATAR_SIGN_IN_URL, AVATAR_LIVE_READ,
//      AVATAR_ARTIFACTS (screenshot folder), CHROMIUM (default /usr/bin/chromium).
import { join } from 'node:path';
import { e2eEnv, launchChromium } from './browser.mjs';

const { base, wav, artifacts } = e2eEnv();
const signIn = process.env.AVATAR_SIGN_IN_URL ?? '';
const read = process.env.AVATAR_LIVE_READ ?? '';

const browser = await launchChromium(wav);
const result = { ok: false, steps: [], console: [] };
const step = (name) => {
  result.steps.push(name);
  console.error(`[console] ${name}`);
};
const row = (page, user) => page.locator('[data-testid="live-message"]', { hasText: user });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(60000);
  page.on('console', (m) => {
    if (m.type() === 'error') result.console.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`));

  await page.goto(signIn, { waitUntil: 'networkidle' });
  await page.getByTestId('tab-live').click();
  await page.waitForSelector('[data-testid="live-console"][data-available="true"]');
  await page.waitForSelector('[data-testid="live-platform"][data-platform="twitch"][data-state="connected"]');
  step('console open, twitch connected');

  await page.getByTestId('live-pause').click();
  await page.waitForSelector('[data-testid="live-pause"][aria-pressed="true"]');
  step('AI paused');

  // The test sends the chat now: a viewer held back by the pause, and link spam.
  await row(page, '미나').waitFor();
  await row(page, 'spammer').waitFor();
  result.minaBefore = {
    status: await row(page, '미나').getAttribute('data-status'),
    reason: await row(page, '미나').getAttribute('data-reason'),
  };
  result.spamVerdict = await row(page, 'spammer').getAttribute('data-verdict');
  step('chat listed with verdicts');

  await row(page, '미나').getByTestId('live-answer').click();
  await page.waitForSelector('[data-testid="live-message"][data-status="answered"]');
  const reply = page.locator('[data-testid="live-reply"]').first();
  await reply.waitFor();
  result.replyTurnId = await reply.getAttribute('data-turn-id');
  result.replyText = await reply.innerText();
  const overlay = await page.request.get(`${base}/api/v1/overlay/state?key=${encodeURIComponent(read)}`);
  result.overlayReplies = (await overlay.json()).messages.filter((m) => m.kind === 'reply').map((m) => m.text);
  await page.screenshot({ path: join(artifacts, 'live-console.png'), fullPage: true });
  step('answered: the reply is listed and on the overlay');

  await reply.getByTestId('rate-up').click();
  await page.waitForSelector(`[data-testid="rate"][data-turn-id="${result.replyTurnId}"][data-rating="up"]`);
  step('rated up in the console');

  await page.getByTestId('live-say-text').fill('Thanks for watching!');
  await page.getByTestId('live-say-send').click();
  await page.locator('[data-testid="live-reply"]', { hasText: 'Thanks for watching!' }).waitFor();
  step('typed line spoken');

  await page.getByTestId('live-disconnect').click();
  await page.waitForSelector('[data-testid="live-platform"][data-running="false"]');
  result.disconnectedState = await page.getByTestId('live-platform').getAttribute('data-state');
  await page.getByTestId('live-connect').click();
  await page.waitForSelector('[data-testid="live-platform"][data-running="true"][data-state="connected"]');
  step('disconnected and reconnected');

  await page.getByTestId('tab-history').click();
  await page.locator('[data-testid="session-item"]').first().waitFor();
  const sessions = page.locator('[data-testid="session-item"]');
  for (let i = 0; i < (await sessions.count()); i += 1) {
    await sessions.nth(i).click();
    const turn = page.locator('[data-testid="history-turn"]', { hasText: '미나' });
    if (await turn.count()) break;
  }
  const rate = page.locator(`[data-testid="rate"][data-turn-id="${result.replyTurnId}"]`);
  await rate.getByTestId('rate-down').click();
  await page.waitForSelector(`[data-testid="rate"][data-turn-id="${result.replyTurnId}"][data-rating="down"]`);
  await rate.getByTestId('rate-comment').click();
  await rate.getByTestId('rate-comment-text').fill('too formal');
  await rate.getByRole('button', { name: 'Save' }).click();
  await page.waitForSelector(`[data-testid="rate"][data-turn-id="${result.replyTurnId}"] [data-testid="rate-comment"]`);
  await page.screenshot({ path: join(artifacts, 'live-history-rating.png'), fullPage: true });
  step('rated down with a comment in the history');

  // The admin's fine-tuning download from the Live tab: the summary, then the JSONL itself.
  await page.getByTestId('tab-live').click();
  await page.getByTestId('live-export').getByLabel('Rating').selectOption('down');
  await page.waitForSelector('[data-testid="live-export-summary"][data-lines="1"]');
  const href = await page.getByTestId('live-export-link').getAttribute('href');
  const download = await page.request.get(`${base}${href}`);
  result.exportStatus = download.status();
  result.exportLines = (await download.text()).trim().split('\n').map((l) => JSON.parse(l));
  step('export downloaded');
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack ? err.stack : err);
  const p = browser.contexts()[0]?.pages()[0];
  if (p) await p.screenshot({ path: join(artifacts, 'live-console-failure.png'), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
