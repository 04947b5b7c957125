// End-to-end for the live-stream pages that OBS opens (docs/live.md): the transparent overlay with
// viewer chat and the avatar's replies, the streamer-chat toggle pushed live, and the stage page
// playing the replies' audio. Prints one JSON line; tests/browser/test_live_pages.py starts the
// server and the stand-in Twitch chat, judges the result and keeps the screenshots.
//
// Env: AVATAR_URL, AVATAR_WAV (for the shared launcher), AVATAR_LIVE_READ, AVATAR_LIVE_OPERATOR,
//      AVATAR_ARTIFACTS (screenshot folder), CHROMIUM (default /usr/bin/chromium).
import { join } from 'node:path';
import { e2eEnv, launchChromium } from './browser.mjs';

const { base, wav, artifacts } = e2eEnv();
const read = process.env.AVATAR_LIVE_READ ?? '';
const operator = process.env.AVATAR_LIVE_OPERATOR ?? '';

const browser = await launchChromium(wav);
const result = { ok: false, steps: [], console: [] };
const step = (name) => {
  result.steps.push(name);
  console.error(`[live] ${name}`);
};
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  page.setDefaultTimeout(60000);
  page.on('console', (m) => {
    if (m.type() === 'error') result.console.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`));

  await page.goto(`${base}/overlay?key=${encodeURIComponent(read)}`);
  await page.waitForFunction(() => document.querySelectorAll('.line.reply').length >= 1);
  result.background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  result.lines = await page.$$eval('.line', (els) => els.map((e) => ({ cls: e.className, text: e.textContent })));
  await page.screenshot({ path: join(artifacts, 'live-overlay.png'), omitBackground: true });
  step('overlay');

  const hide = await page.request.post(`${base}/api/v1/overlay/streamer-chat`, {
    headers: { Authorization: `Bearer ${operator}` },
    data: { show: false },
  });
  result.hideStatus = hide.status();
  await page.waitForFunction(() => document.querySelectorAll('.line.streamer').length === 0);
  result.linesAfterHide = await page.$$eval('.line', (els) => els.length);
  step('streamer chat hidden live');

  await page.goto(`${base}/stage?key=${encodeURIComponent(read)}&since=0`);
  await page.waitForFunction(() => (window.stagePlayed || []).length >= 1);
  result.played = await page.evaluate(() => window.stagePlayed);
  result.caption = await page.locator('#caption').innerText();
  result.face = await page.locator('#avatar').getAttribute('data-emotion');
  await page.screenshot({ path: join(artifacts, 'live-stage.png'), omitBackground: true });
  step('stage played');
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack ? err.stack : err);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
