// The OpenAI Realtime endpoint (docs/realtime.md) driven by the `openai` npm package's own
// Realtime WebSocket client, which authenticates with the subprotocols `realtime` and
// `openai-insecure-api-key.KEY`. A typed item and `response.create` must end in `response.done`.
// Prints one JSON line; tests/browser/test_openai_realtime_page.py starts the server and judges it.
//
// Env: AVATAR_URL, AVATAR_KEY. Needs a global WebSocket (Node 22, or Node 20 with
// NODE_OPTIONS=--experimental-websocket).
import OpenAI from 'openai';
import { OpenAIRealtimeWebSocket } from 'openai/realtime/websocket';

const base = process.env.AVATAR_URL ?? '';
const key = process.env.AVATAR_KEY ?? '';
const result = { ok: false, steps: [], console: [], types: [] };
try {
  const client = new OpenAI({ apiKey: key, baseURL: `${base}/v1` });
  const run = await new Promise((resolve, reject) => {
    const rt = new OpenAIRealtimeWebSocket(
      {
        model: 'avatar',
        // The package always dials wss://; the test server speaks plain ws on loopback.
        onURL: (url) => {
          if (base.startsWith('http://')) url.protocol = 'ws';
        },
      },
      client,
    );
    let transcript = '';
    let audioBytes = 0;
    const timer = setTimeout(() => reject(new Error(`no response.done; saw ${result.types.join(',')}`)), 60000);
    rt.on('event', (event) => result.types.push(event.type));
    rt.on('error', (err) => reject(new Error(`error event: ${JSON.stringify(err.error ?? err.message)}`)));
    rt.on('session.created', () => {
      result.steps.push('session.created');
      const item = { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'Hello!' }] };
      rt.send({ type: 'conversation.item.create', item });
      rt.send({ type: 'response.create' });
    });
    rt.on('response.output_audio_transcript.delta', (event) => {
      transcript += event.delta;
    });
    rt.on('response.output_audio.delta', (event) => {
      audioBytes += Buffer.from(event.delta, 'base64').length;
    });
    rt.on('response.done', (event) => {
      clearTimeout(timer);
      const protocol = rt.socket.protocol;
      rt.close();
      resolve({ protocol, transcript, audioBytes, status: event.response.status });
    });
  });
  Object.assign(result, run);
  result.steps.push('response.done');
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack ? err.stack : err);
}
console.log(JSON.stringify(result));
process.exit(0);
