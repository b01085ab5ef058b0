// The peers' side of the comparison: the official openai Node SDK and @openrouter/sdk against
// the canned server, and eventsource-parser on the 64 MiB stream. One JSON line per run, in
// frugal-load's shape.
//   node peers.mjs MODULES openai|openrouter whole|stream|hold BASE_URL REQUESTS CONCURRENCY
//   node peers.mjs MODULES parse FILE decode|frame
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';

const [modules, sdk, mode, ...rest] = process.argv.slice(2);
const load = (name, file) => import(pathToFileURL(path.join(modules, name, file)).href);

function percentile(v, p) {
  if (v.length === 0) return 0;
  v.sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.round(p * (v.length - 1)))];
}
const cpuSeconds = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };

if (sdk === 'parse') {
  const { createParser } = await load('eventsource-parser', 'dist/index.js');
  const [file, how] = [mode, rest[0]];
  const text = fs.readFileSync(file, 'utf8');
  const decode = how === 'decode';
  let best = Infinity, events = 0, sum = 0;
  for (let rep = 0; rep < 5; rep++) {
    events = 0;
    const parser = createParser({
      onEvent(e) {
        events++;
        if (decode && e.data !== '[DONE]') sum += Object.keys(JSON.parse(e.data)).length;
      },
    });
    const c0 = cpuSeconds();
    for (let i = 0; i < text.length; i += 16384) parser.feed(text.slice(i, i + 16384));
    best = Math.min(best, cpuSeconds() - c0);
  }
  const bytes = Buffer.byteLength(text);
  console.log(JSON.stringify({ bytes, events, seconds: best, mib_per_s: bytes / 1048576 / best,
    cpu_us_per_event: best * 1e6 / events, decoded: decode, checksum: sum }));
  process.exit(0);
}

const [baseURL, requestsArg, concurrencyArg] = rest;
const requests = Number(requestsArg), concurrency = Number(concurrencyArg);
const apiKey = 'sk-or-v1-bench';
const model = 'openai/gpt-4o-mini';
const messages = [{ role: 'user', content: 'Say something short.' }];
let whole, stream;
if (sdk === 'openai') {
  const { default: OpenAI } = await load('openai', 'index.mjs');
  const c = new OpenAI({ apiKey, baseURL, maxRetries: 0 });
  whole = () => c.chat.completions.create({ model, messages, max_tokens: 256 });
  stream = () => c.chat.completions.create({ model, messages, max_tokens: 256, stream: true });
} else {
  const { OpenRouter } = await load('@openrouter/sdk', 'esm/index.js');
  const c = new OpenRouter({ apiKey, serverURL: baseURL });
  whole = () => c.chat.send({ chatRequest: { model, messages, maxTokens: 256, stream: false } });
  stream = () => c.chat.send({ chatRequest: { model, messages, maxTokens: 256, stream: true } });
}

if (mode === 'hold') {
  // N streams open at once, each read to its first chunk and held: memory per open stream.
  global.gc?.();
  const before = process.memoryUsage().rss;
  const held = [];
  let errors = 0;
  await Promise.all(Array.from({ length: requests }, async () => {
    try {
      const s = await stream();
      const it = s[Symbol.asyncIterator]();
      await it.next();
      held.push(it);
    } catch { errors++; }
  }));
  const after = process.memoryUsage().rss;
  console.log(JSON.stringify({ open_streams: held.length, errors,
    kib_per_stream: (after - before) / 1024 / Math.max(held.length, 1),
    peak_rss_kib: process.resourceUsage().maxRSS }));
  process.exit(0);
}

// The same unit as frugal-load counts: content deltas (the role-only, finish and usage chunks
// carry no text and are not counted on either side).
const hasText = (chunk) => Boolean(chunk?.choices?.[0]?.delta?.content);

async function runPhase(total) {
  let next = 0, done = 0, errors = 0, chunks = 0;
  const latency = [];
  async function worker() {
    while (next < total) {
      next++;
      const t0 = performance.now();
      try {
        if (mode === 'whole') {
          await whole();
        } else {
          for await (const chunk of await stream()) if (hasText(chunk)) chunks++;
        }
      } catch (e) {
        if (errors++ === 0) console.error(String(e));
      }
      latency.push(performance.now() - t0);
      done++;
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { done, errors, chunks, latency };
}

// Warm-up, unmeasured: the JIT has compiled the hot paths and the keep-alive connections are
// open, as in a server that has been up for a while (frugal-load warms up the same way).
const warm = await runPhase(Math.max(concurrency * 4, Math.floor(requests / 4)));
if (warm.errors) { console.error(`warm-up: ${warm.errors} errors`); process.exit(1); }
const c0 = cpuSeconds();
const t0 = performance.now();
const { done, errors, chunks, latency } = await runPhase(requests);
const seconds = (performance.now() - t0) / 1000;
const cpu = cpuSeconds() - c0;
console.log(JSON.stringify({ requests: done, seconds, req_per_s: done / seconds,
  chunks_per_s: chunks / seconds, cpu_us_per_req: cpu * 1e6 / Math.max(done, 1),
  cpu_us_per_chunk: chunks ? cpu * 1e6 / chunks : 0, peak_rss_kib: process.resourceUsage().maxRSS,
  p50_ms: percentile(latency, 0.5), p99_ms: percentile(latency, 0.99), errors }));
