// The OpenAI Realtime endpoint (docs/realtime.md) from a page in Debian's Chromium, authenticated
// the way the `openai` npm package does it in a browser: the subprotocols `realtime` and
// `openai-insecure-api-key.KEY`. A typed item and `response.create` must end in `response.done`.
// Prints one JSON line; tests/browser/test_openai_realtime_page.py starts the server and judges it.
//
// Env: AVATAR_URL, AVATAR_WAV (for the shared launcher), AVATAR_KEY, CHROMIUM.
import { e2eEnv, launchChromium } from './browser.mjs';

const { base, wav } = e2eEnv();
const key = process.env.AVATAR_KEY ?? '';

const browser = await launchChromium(wav);
const result = { ok: false, steps: [], console: [] };
const step = (name) => {
  result.steps.push(name);
  console.error(`[realtime] ${name}`);
};
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(60000);
  page.on('console', (m) => {
    if (m.type() === 'error') result.console.push(`${m.type()}: ${m.text()}`);
  });
  await page.goto(`${base}/api/v1/health/live`); // a page of this server: its origin is allowed
  step('page');
  const run = await page.evaluate(
    ({ url, key }) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(url, ['realtime', `openai-insecure-api-key.${key}`]);
        const types = [];
        let transcript = '';
        let audioBytes = 0;
        const timer = setTimeout(() => reject(new Error(`no response.done; saw ${types.join(',')}`)), 50000);
        ws.onerror = () => reject(new Error('the socket failed'));
        ws.onmessage = (message) => {
          const event = JSON.parse(message.data);
          types.push(event.type);
          if (event.type === 'session.created') {
            const item = { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'Hello!' }] };
            ws.send(JSON.stringify({ type: 'conversation.item.create', item }));
            ws.send(JSON.stringify({ type: 'response.create' }));
          } else if (event.type === 'response.output_audio_transcript.delta') {
            transcript += event.delta;
          } else if (event.type === 'response.output_audio.delta') {
            audioBytes += atob(event.delta).length;
          } else if (event.type === 'response.done') {
            clearTimeout(timer);
            ws.close();
            resolve({ protocol: ws.protocol, types, transcript, audioBytes, status: event.response.status });
          }
        };
      }),
    { url: `${base.replace(/^http/, 'ws')}/v1/realtime?model=avatar`, key },
  );
  Object.assign(result, run);
  step('response.done');
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack ? err.stack : err);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
