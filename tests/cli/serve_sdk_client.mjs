// The official SDKs against `frugal serve`: what a Node user of the gateway gets. Driven by
// serve_sdk_test.py, which starts the simulator and the gateway and checks the ledger after.
//   node serve_sdk_client.mjs MODULES BASE_URL KEYS_JSON
// KEYS_JSON: {"alpha": KEY, "beta": KEY, "delta": KEY, "limited": KEY}. Prints ok/FAIL lines.
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const [modules, baseURL, keysJson] = process.argv.slice(2);
const keys = JSON.parse(keysJson);
const load = (name, file) => import(pathToFileURL(path.join(modules, name, file)).href);
const { default: OpenAI } = await load('openai', 'index.mjs');
const { OpenRouter } = await load('@openrouter/sdk', 'esm/index.js');

let failures = 0;
function check(name, ok, detail = '') {
  if (ok) console.log('ok  ', name);
  else { failures++; console.log('FAIL', name, detail); }
}
async function caught(p) {
  try { await p; return null; } catch (e) { return e; }
}
const user = (text) => [{ role: 'user', content: text }];
const openai = (key) => new OpenAI({ apiKey: key, baseURL, maxRetries: 0 });
const openrouter = (key) => new OpenRouter({ apiKey: key, serverURL: baseURL, retryConfig: { strategy: 'none' } });

// openai: whole, with the gateway's headers.
{
  const c = openai(keys.alpha);
  const { data, response } = await c.chat.completions
    .create({ model: 'frugal/cheap', messages: user('Say hello') })
    .withResponse();
  check('openai whole: the model that answered', data.model === 'google/gemma-4-31b-it:free', data.model);
  check('openai whole: usage.cost', data.usage.cost === 0 && data.usage.total_tokens > 0, JSON.stringify(data.usage));
  check('openai whole: x-frugal headers', response.headers.get('x-frugal-escalated') === 'false' &&
        response.headers.get('x-frugal-model') === data.model, [...response.headers].join(' '));
}

// openai: a streamed cascade that escalates shows only the flagship's text.
{
  const c = openai(keys.alpha);
  const hard = user('[sim difficulty=10] Prove the theorem step by step');
  let text = '', usage = null, model = '';
  for await (const chunk of await c.chat.completions.create({
    model: 'frugal/cheap', messages: hard, max_tokens: 200, stream: true,
    stream_options: { include_usage: true } })) {
    text += chunk.choices[0]?.delta?.content ?? '';
    if (chunk.usage) usage = chunk.usage;
    model = chunk.model;
  }
  const direct = await c.chat.completions.create({ model: 'anthropic/claude-sonnet-4.5', messages: hard, max_tokens: 200 });
  check('openai stream: escalated, only the flagship\'s text', text === direct.choices[0].message.content && text.length > 0,
        JSON.stringify([text, direct.choices[0].message.content]));
  check('openai stream: the flagship named, usage with cost', model === 'anthropic/claude-sonnet-4.5' && usage && usage.cost > 0,
        JSON.stringify([model, usage]));
}

// openai: a tool call streamed, joined by the SDK's own stream helper, is the whole answer's.
{
  const c = openai(keys.alpha);
  const ask = {
    model: 'frugal/cheap', messages: user('Weather in Bern? [sim tool=get_weather tokens=8]'),
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { text: { type: 'string' } } } } }],
  };
  const whole = await c.chat.completions.create(ask);
  const final = await c.chat.completions.stream({ ...ask, stream: true }).finalChatCompletion();
  const [w, s] = [whole.choices[0], final.choices[0]];
  check('openai whole: a tool call and finish_reason tool_calls', w.finish_reason === 'tool_calls' &&
        w.message.tool_calls?.length === 1 && w.message.tool_calls[0].function.name === 'get_weather', JSON.stringify(w));
  check('openai stream: the same tool call, joined by the SDK', s.finish_reason === 'tool_calls' &&
        s.message.tool_calls?.length === 1 && s.message.tool_calls[0].function.name === 'get_weather' &&
        s.message.tool_calls[0].function.arguments === w.message.tool_calls[0].function.arguments &&
        JSON.parse(s.message.tool_calls[0].function.arguments).text.length > 0, JSON.stringify(s));
}

// openai: errors parsed into the SDK's own types.
{
  let e = await caught(openai('sk-unknown-0000000000000').chat.completions.create({ model: 'frugal/cheap', messages: user('x') }));
  check('openai 401 → AuthenticationError', e instanceof OpenAI.AuthenticationError && e.status === 401, String(e));
  e = await caught(openai(keys.alpha).chat.completions.create({ model: 'frugal/cheap', messages: [] }));
  check('openai 400 → BadRequestError with param', e instanceof OpenAI.BadRequestError && e.param === 'messages', String(e));
  e = await caught(openai(keys.beta).chat.completions.create({ model: 'openai/gpt-5-mini', messages: user('x') }));
  check('openai 403 → PermissionDeniedError', e instanceof OpenAI.PermissionDeniedError, String(e));
  e = await caught(openai(keys.alpha).chat.completions.create({ model: 'no/such', messages: user('x') }));
  check('openai 404 → NotFoundError', e instanceof OpenAI.NotFoundError, String(e));
  const limited = openai(keys.limited);
  await limited.chat.completions.create({ model: 'frugal/cheap', messages: user('x') });
  e = await caught(limited.chat.completions.create({ model: 'frugal/cheap', messages: user('x') }));
  check('openai 429 → RateLimitError with Retry-After', e instanceof OpenAI.RateLimitError &&
        Number(e.headers?.get?.('retry-after')) >= 1, String(e));
}

// Per-key caps under 8 concurrent clients per key: beta's small cap runs out, delta's does not.
{
  const statuses = { beta: [], delta: [] };
  async function client(tenant) {
    const c = openai(keys[tenant]);
    for (let i = 0; i < 4; i++) {
      const e = await caught(c.chat.completions.create({
        model: 'anthropic/claude-sonnet-4.5', messages: user('[sim tokens=40] go'), max_tokens: 60 }));
      statuses[tenant].push(e ? e.status : 200);
      if (e && e.status === 402 && !statuses.message) statuses.message = e.message;
    }
  }
  await Promise.all([...Array(8)].flatMap(() => [client('beta'), client('delta')]));
  check('beta: 402 once its cap is reached', statuses.beta.includes(200) && statuses.beta.includes(402), JSON.stringify(statuses.beta));
  check('402 names the cap', /tenant:beta has \$[0-9.]+ left of its \$0\.004 cap/.test(statuses.message ?? ''), statuses.message);
  check('delta: not blocked by beta', statuses.delta.every((s) => s === 200), JSON.stringify(statuses.delta));
}

// @openrouter/sdk: whole, streamed, and its error types.
{
  const c = openrouter(keys.alpha);
  const r = await c.chat.send({ chatRequest: { model: 'frugal/cheap', messages: user('Say hello'), stream: false } });
  check('openrouter whole: the model and its usage', r.model === 'google/gemma-4-31b-it:free' && r.usage?.totalTokens > 0,
        JSON.stringify([r.model, r.usage]));
  let text = '';
  const s = await c.chat.send({ chatRequest: { model: 'frugal/cheap', messages: user('Say hello'), stream: true } });
  for await (const chunk of s) text += chunk.choices?.[0]?.delta?.content ?? '';
  check('openrouter stream: the same text', text === r.choices[0].message.content, JSON.stringify([text, r.choices[0].message.content]));
  // An error after the stream's text began: a chunk the SDK's schema accepts, carrying `error`.
  const chunks = [];
  const broken = await caught((async () => {
    // A free model: its attempt, whose cost no usage reports, is held at $0 (a paid one is held at
    // its worst case until reconciled, and the ledger would not equal the bill).
    const m = await c.chat.send({ chatRequest: { model: 'google/gemma-4-31b-it:free', stream: true, maxTokens: 60,
      messages: user('[sim tokens=30 fault=midstream-error after=5] go') } });
    for await (const chunk of m) chunks.push(chunk);
  })());
  const last = chunks[chunks.length - 1];
  check('openrouter stream: a mid-stream error is a chunk it parses', !broken && chunks.length > 1 &&
        last.error?.code === 502 && last.choices?.[0]?.finishReason === 'error' && last.id === chunks[0].id,
        broken ? String(broken).slice(0, 300) : JSON.stringify(last));
  let e = await caught(openrouter('sk-unknown-0000000000000').chat.send({ chatRequest: { model: 'frugal/cheap', messages: user('x') } }));
  check('openrouter 401 → UnauthorizedResponseError', e?.name === 'UnauthorizedResponseError', String(e));
  e = await caught(openrouter(keys.beta).chat.send({ chatRequest: {
    model: 'anthropic/claude-sonnet-4.5', messages: user('[sim tokens=40] go'), maxTokens: 60 } }));
  check('openrouter 402 → PaymentRequiredResponseError', e?.name === 'PaymentRequiredResponseError', String(e));
  e = await caught(openrouter(keys.alpha).chat.send({ chatRequest: { model: 'frugal/cheap', messages: [] } }));
  check('openrouter 400 → BadRequestResponseError', e?.name === 'BadRequestResponseError', String(e));
  e = await caught(openrouter(keys.limited).chat.send({ chatRequest: { model: 'frugal/cheap', messages: user('x') } }));
  check('openrouter 429 → TooManyRequestsResponseError', e?.name === 'TooManyRequestsResponseError', String(e));
}

// The catalog through both SDKs: the upstream's models and each policy as a model.
{
  const ids = [];
  for await (const m of await openai(keys.alpha).models.list()) ids.push(m.id);
  check('openai models.list: the catalog and the policies', ids.includes('frugal/cheap') &&
        ids.includes('anthropic/claude-sonnet-4.5'), JSON.stringify(ids));
  const e = await caught(openrouter(keys.alpha).models.list());
  const r = e ? null : await openrouter(keys.alpha).models.list();
  const rows = r?.result?.data ?? r?.data ?? [];
  const policy = rows.find((m) => m.id === 'frugal/cheap');
  check('@openrouter/sdk models.list parses, the policy priced at its worst case',
        !e && policy && policy.pricing.completion === '0.000015', e ? String(e) : JSON.stringify(policy));
}

process.exit(failures ? 1 : 0);
