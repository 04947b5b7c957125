// End-to-end for the voice-profile page: Debian's Chromium with a fake microphone playing a WAV records
// a sample with MediaRecorder, saves it, previews it, picks it for the conversation and deletes it.
// Prints one JSON line with what the page showed; backend/tests/voice_profiles/test_browser.py starts
// the server, judges the result and checks the database and the object store afterwards.
//
// Env: AVATAR_URL, AVATAR_WAV (16-bit PCM WAV for the fake mic), AVATAR_RECORD_MS (how long to record),
//      AVATAR_ARTIFACTS (screenshot folder), CHROMIUM (default /usr/bin/chromium).
import { join } from 'node:path';
import { e2eEnv, launchChromium } from './browser.mjs';

const { base, wav, artifacts } = e2eEnv();
const recordMs = Number(process.env.AVATAR_RECORD_MS ?? 7000);

const browser = await launchChromium(wav);
const result = { ok: false, steps: [], console: [] };
const step = (name) => {
  result.steps.push(name);
  console.error(`[voices] ${name}`);
};
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 }, locale: 'en-US' });
  await context.grantPermissions(['microphone'], { origin: base });
  const page = await context.newPage();
  page.setDefaultTimeout(120000);
  page.on('console', (m) => {
    if (m.type() === 'error') result.console.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`));
  page.on('dialog', (d) => void d.accept());

  // Sign in as `avatar up` lets a newcomer: the one-time link it printed (docs/security.md).
  if (process.env.AVATAR_SIGN_IN_URL) await page.goto(process.env.AVATAR_SIGN_IN_URL, { waitUntil: 'networkidle' });

  await page.goto(base, { waitUntil: 'networkidle' });
  await page.getByTestId('tab-voices').click();
  await page.getByTestId('voice-empty').waitFor();
  step('voices page');

  await page.getByTestId('voice-record').click();
  await page.waitForTimeout(recordMs);
  await page.getByTestId('voice-record').click();
  result.recordStatus = await page.getByTestId('voice-status').innerText();
  step('recorded');

  await page.getByTestId('voice-name').fill('My recorded voice');
  await page.getByTestId('voice-save').click();
  const item = page.getByTestId('voice-item');
  await item.waitFor();
  result.profileId = await item.getAttribute('data-profile-id');
  result.itemText = await item.innerText();
  result.saveStatus = await page.getByTestId('voice-status').innerText();
  step('saved');

  await page.getByTestId('voice-preview-mode').selectOption('fast');
  await item.getByTestId('voice-preview').click();
  await page.getByTestId('voice-notice').waitFor();
  result.notice = await page.getByTestId('voice-notice').innerText();
  await page.waitForFunction(() => document.querySelector('[data-testid="voice-status"]')?.textContent?.startsWith('Playing'));
  result.previewStatus = await page.getByTestId('voice-status').innerText();
  step('previewed');

  await item.getByTestId('voice-select').check();
  result.selected = await item.getByTestId('voice-select').isChecked();
  step('selected');
  await page.screenshot({ path: join(artifacts, 'web-app-voices.png'), fullPage: true });

  const stored = await page.request.get(`${base}/api/v1/voice-profiles/${result.profileId}`);
  result.stored = await stored.json();

  await item.getByTestId('voice-delete').click();
  await page.getByTestId('voice-empty').waitFor();
  result.afterDelete = await page.getByTestId('voice-status').innerText();
  result.defaultSelectedAfterDelete = await page.getByTestId('voice-default').isChecked();
  step('deleted');
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack ? err.stack : err);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
