// Browser check of the web avatar following the avatar control stream (WS /ws/{id}/avatar,
// docs/avatar-control.md), against a server with scripted engines: idle head motion before the
// reply, the mouth moving from the events (not the local level meter) while the reply plays, and
// closed after the stop button. Prints one JSON line.
//
// Env: AVATAR_URL, AVATAR_SIGN_IN_URL (the one-time link `avatar up` prints), AVATAR_WAV, AVATAR_ARTIFACTS, CHROMIUM, AVATAR_E2E_TIMEOUT_MS (default 60000).
import { join } from 'node:path';
import { e2eEnv, launchChromium } from './browser.mjs';

const { base, wav, artifacts } = e2eEnv();
const timeout = Number(process.env.AVATAR_E2E_TIMEOUT_MS ?? 60000);

const browser = await launchChromium(wav);
const result = { ok: false, steps: [], console: [] };
const step = (name) => {
  result.steps.push(name);
  console.error(`[avatar] ${name}`);
};

/** Samples the avatar's live values every animation frame for `ms` milliseconds. */
const sample = (page, ms) =>
  page.evaluate(async (duration) => {
    const el = document.querySelector('[data-testid="avatar"]');
    const out = [];
    const t0 = performance.now();
    while (performance.now() - t0 < duration) {
      await new Promise((r) => requestAnimationFrame(r));
      const css = getComputedStyle(el);
      out.push({
        t: performance.now() - t0,
        source: el.dataset.source ?? '',
        mouth: Number(el.style.getPropertyValue('--mouth-open') || css.getPropertyValue('--mouth-open') || 0),
        headX: Number(el.style.getPropertyValue('--head-x') || 0),
        speaking: el.classList.contains('is-speaking'),
      });
    }
    return out;
  }, ms);

try {
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  await context.grantPermissions(['microphone'], { origin: base });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') result.console.push(m.text());
  });
  page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`));
  page.setDefaultTimeout(timeout);
  if (process.env.AVATAR_SIGN_IN_URL) await page.goto(process.env.AVATAR_SIGN_IN_URL, { waitUntil: 'networkidle' });
  await page.goto(`${base}/`, { waitUntil: 'networkidle' });
  await page.getByTestId('start').click();
  await page.waitForSelector('[data-testid="talk"][data-connection="open"]');
  await page.waitForSelector('[data-testid="avatar"][data-source="events"]');
  await page.waitForSelector('[data-testid="vts-status"][data-state="running"]');
  result.vts = await page.getByTestId('vts-status').innerText();
  await page.getByTestId('mic').click(); // microphone off: only the typed message goes in
  result.idle = await sample(page, 2500);
  step('idle motion sampled');

  await page.getByPlaceholder('Type a message…').fill('Tell me something');
  await page.getByRole('button', { name: 'Send' }).click();
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="talk"]')?.dataset.receivedChunks) >= 1);
  result.speech = await sample(page, 1500);
  result.emotion = await page.getByTestId('avatar').getAttribute('data-emotion');
  step('reply sampled');
  await page.screenshot({ path: join(artifacts, 'web-app-avatar-speaking.png') });

  await page.getByTestId('stop').click();
  await page.waitForTimeout(100);
  result.afterStop = await sample(page, 500);
  step('stopped');
  result.ok = true;
} catch (err) {
  result.error = String(err?.stack ?? err);
  const p = browser.contexts()[0]?.pages()[0];
  if (p) await p.screenshot({ path: join(artifacts, 'web-app-avatar-failure.png'), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
