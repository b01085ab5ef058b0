// Drives `frugal sim` with the SDKs most users would pick instead of frugal: every chat must
// complete without error through the SDK's own parsing (and, for @openrouter/sdk, its schema
// validation), and the usage and cost each SDK reports must equal the simulator's bill.
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const [baseURL, modules] = process.argv.slice(2);
const load = (name, file) => import(pathToFileURL(path.join(modules, name, file)).href);
const { default: OpenAI } = await load('openai', 'index.mjs');
const { OpenRouter } = await load('@openrouter/sdk', 'esm/index.js');

const apiKey = 'sk-or-v1-sdk-peers-test';
const openai = new OpenAI({ apiKey, baseURL, maxRetries: 0 });
const openrouter = new OpenRouter({ apiKey, serverURL: baseURL });

const models = ['google/gemma-4-31b-it:free', 'anthropic/claude-fable-5', 'meta-llama/llama-4-scout',
  '~anthropic/claude-fable-latest', 'perplexity/sonar'];
const prompt = (i) => [{ role: 'user', content: `Question ${i}: what does cheap-first routing buy?` }];

let failures = 0;
const seen = [];  // {sdk, id, model, prompt_tokens, completion_tokens, cost}
const check = (ok, what) => { if (!ok) { failures++; console.log(`FAIL ${what}`); } };

async function openaiWhole(model, i) {
  const r = await openai.chat.completions.create({ model, messages: prompt(i), max_tokens: 40 });
  check(typeof r.choices[0].message.content === 'string', `openai whole ${model}: content`);
  return { sdk: 'openai whole', id: r.id, model: r.model, ...r.usage };
}
async function openaiStream(model, i) {
  const s = await openai.chat.completions.create({ model, messages: prompt(i), max_tokens: 40, stream: true });
  let id, served, usage, text = '';
  for await (const chunk of s) {
    id = chunk.id; served = chunk.model;
    text += chunk.choices?.[0]?.delta?.content ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  check(usage !== undefined, `openai stream ${model}: usage chunk`);
  check(text.length > 0, `openai stream ${model}: text`);
  return { sdk: 'openai stream', id, model: served, ...usage };
}
async function openrouterWhole(model, i) {
  const r = await openrouter.chat.send({ chatRequest: { model, messages: prompt(i), maxTokens: 40, stream: false } });
  check(typeof r.choices[0].message.content === 'string', `@openrouter/sdk whole ${model}: content`);
  const u = r.usage;
  return { sdk: '@openrouter/sdk whole', id: r.id, model: r.model,
    prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, cost: u.cost };
}
async function openrouterStream(model, i) {
  const s = await openrouter.chat.send({ chatRequest: { model, messages: prompt(i), maxTokens: 40, stream: true } });
  let id, served, usage, text = '';
  for await (const chunk of s) {
    id = chunk.id; served = chunk.model;
    text += chunk.choices?.[0]?.delta?.content ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  check(usage !== undefined, `@openrouter/sdk stream ${model}: usage chunk`);
  check(text.length > 0, `@openrouter/sdk stream ${model}: text`);
  return { sdk: '@openrouter/sdk stream', id, model: served,
    prompt_tokens: usage?.promptTokens, completion_tokens: usage?.completionTokens, cost: usage?.cost };
}

let i = 0;
for (const model of models) {
  for (const run of [openaiWhole, openaiStream, openrouterWhole, openrouterStream]) {
    try {
      seen.push(await run(model, i++));
    } catch (e) {
      failures++;
      console.log(`FAIL ${run.name} ${model}: ${e.name}: ${e.message}`);
    }
  }
}

// Exact decimal sums: the bill and each generation's cost are decimal text; BigInt at 1e-18.
const atto = (text) => {
  const [w, f = ''] = String(text).split('.');
  return BigInt(w) * 10n ** 18n + BigInt((f + '0'.repeat(18)).slice(0, 18));
};
const get = async (p) => {
  const r = await fetch(`${baseURL.replace(/\/api\/v1$/, '')}${p}`, { headers: { Authorization: `Bearer ${apiKey}` } });
  return { status: r.status, text: await r.text() };
};

const perModel = new Map();
for (const s of seen) {
  const g = await get(`/api/v1/generation?id=${s.id}`);
  check(g.status === 200, `${s.sdk} ${s.id}: generation lookup answered ${g.status}`);
  if (g.status !== 200) continue;
  const costText = g.text.match(/"total_cost":([0-9.eE+-]+)/)[1];
  const data = JSON.parse(g.text).data;
  check(s.cost === Number(costText), `${s.sdk} ${s.model}: SDK cost ${s.cost} = billed ${costText}`);
  check(s.prompt_tokens === data.tokens_prompt, `${s.sdk} ${s.model}: prompt tokens ${s.prompt_tokens} = ${data.tokens_prompt}`);
  check(s.completion_tokens === data.tokens_completion, `${s.sdk} ${s.model}: completion tokens`);
  check(s.model === data.model, `${s.sdk}: served model ${s.model} = ${data.model}`);
  const m = perModel.get(data.model) ?? { cost: 0n, requests: 0, prompt: 0, completion: 0 };
  m.cost += atto(costText); m.requests++; m.prompt += s.prompt_tokens; m.completion += s.completion_tokens;
  perModel.set(data.model, m);
}
const bill = JSON.parse((await get('/__sim/bill')).text);
for (const [model, m] of perModel) {
  const b = bill.models[model];
  check(b !== undefined, `bill has ${model}`);
  if (!b) continue;
  check(atto(b.cost_usd) === m.cost, `${model}: bill ${b.cost_usd} = sum of SDK-reported generations`);
  check(b.requests === m.requests, `${model}: bill requests ${b.requests} = ${m.requests}`);
  check(b.prompt_tokens === m.prompt && b.completion_tokens === m.completion, `${model}: bill tokens`);
}
const paid = seen.filter((s) => s.cost > 0).length;
check(paid > 0, 'some calls were paid');
console.log(`${seen.length} chats through 2 SDKs, ${paid} paid; bill total ${bill.total.cost_usd} USD; ${failures} failures`);
process.exit(failures === 0 ? 0 : 1);
