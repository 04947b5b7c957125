// Shared set-up of the browser end-to-end scripts: their environment, and Debian's Chromium
// (never a downloaded browser) with a fake microphone playing a WAV.
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

/** AVATAR_URL, AVATAR_WAV and AVATAR_ARTIFACTS (created); exits with 2 if the first two are missing. */
export function e2eEnv() {
  const base = process.env.AVATAR_URL;
  const wav = process.env.AVATAR_WAV;
  const artifacts = process.env.AVATAR_ARTIFACTS ?? 'test-artifacts';
  if (!base || !wav) {
    console.error('AVATAR_URL and AVATAR_WAV are required');
    process.exit(2);
  }
  mkdirSync(artifacts, { recursive: true });
  return { base, wav, artifacts };
}

/** Headless Chromium whose microphone plays `wav` (once with `noloop`, else looping). */
export function launchChromium(wav, { noloop = false } = {}) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${wav}${noloop ? '%noloop' : ''}`,
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
}
