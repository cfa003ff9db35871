// sdk.test.mjs — gpt2d-http through the official openai SDK (node --test; run by
// tests/test_http_sdk.sh, which starts the gateways named in the environment):
//   GPT2D_URL_main  a broker with 1 worker (4 slots)
//   GPT2D_URL_busy  a broker with 1 worker of 1 slot, --max-queue 1, each step slowed (overload)
//   GPT2D_URL_auth  a broker whose gateway has API keys (GPT2D_API_KEY is one of them)
// The references are independent of the gateway: `gpt2-tool generate` (the engine in-process) for
// texts, `gpt2-tool logits` for log-probabilities, `gpt2-tool tokenize` for token counts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import OpenAI from "openai";
import {
  env, client, toolGenerate, tokenize, toolLogits, logSoftmax, sseCompletion, textByIndex, waitIdle, sleep,
} from "./util.mjs";

const URL = env("GPT2D_URL_main");
const sdk = client(URL);
const PROMPT = "Dear team,\n\nThanks for the update on";

async function collect(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return chunks;
}

test("models.list names the served model (its directory name)", async () => {
  const page = await sdk.models.list();
  const ids = page.data.map((m) => m.id);
  assert.deepEqual(ids, ["model"]);
  assert.equal(page.data[0].object, "model");
});

test("completion, not streamed: greedy text == gpt2-tool generate, usage counts tokens", async () => {
  const r = await sdk.completions.create({ model: "model", prompt: PROMPT, max_tokens: 20, temperature: 0 });
  assert.equal(r.object, "text_completion");
  assert.equal(r.choices.length, 1);
  const want = await toolGenerate({ prompt: PROMPT, max_tokens: 20, temperature: 0 });
  assert.equal(r.choices[0].text, want);
  assert.equal(r.usage.prompt_tokens, tokenize(PROMPT).length);
  assert.equal(r.choices[0].finish_reason, "length"); // this model's greedy text has no <|endoftext|>
  assert.equal(r.usage.completion_tokens, 20);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test("completion, streamed (sampled, seed, top_p): pieces == non-streamed text == gpt2-tool generate", async () => {
  const p = { prompt: "Once upon a time", max_tokens: 32, temperature: 0.9, top_p: 0.95, seed: 42 };
  const chunks = await collect(await sdk.completions.create({
    ...p, stream: true, stream_options: { include_usage: true },
  }));
  const streamed = textByIndex(chunks)[0];
  const whole = await sdk.completions.create(p);
  const want = await toolGenerate(p);
  assert.equal(streamed, whole.choices[0].text);
  assert.equal(streamed, want);
  assert.ok(chunks.filter((c) => c.choices.length && c.choices[0].text).length > 1, "more than one text chunk");
  const fin = chunks.filter((c) => c.choices.length && c.choices[0].finish_reason);
  assert.equal(fin.length, 1, "one chunk carries the finish_reason");
  assert.equal(fin[0].choices[0].finish_reason, whole.choices[0].finish_reason);
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, [], "the usage chunk comes last, with no choice");
  assert.deepEqual(last.usage, whole.usage);
});

test("n = 3: choice i is seed + i; streamed per index == not streamed; reproducible", async () => {
  const p = { prompt: "The weather today", max_tokens: 12, temperature: 1, seed: 7, n: 3 };
  const a = await sdk.completions.create(p);
  const b = await sdk.completions.create(p);
  assert.deepEqual(a.choices.map((c) => c.index).sort(), [0, 1, 2]);
  const texts = [0, 1, 2].map((i) => a.choices.find((c) => c.index === i).text);
  assert.deepEqual(texts, [0, 1, 2].map((i) => b.choices.find((c) => c.index === i).text));
  for (let i = 0; i < 3; i++) {
    assert.equal(texts[i], await toolGenerate({ ...p, seed: 7 + i }), `choice ${i} == generate --seed ${7 + i}`);
  }
  assert.ok(new Set(texts).size > 1, "three seeds give more than one text");
  assert.equal(a.usage.completion_tokens, 36);
  const s = textByIndex(await collect(await sdk.completions.create({ ...p, stream: true })));
  assert.deepEqual(s, texts);
});

test("seed: same seed, same text; another seed, another text", async () => {
  const p = { prompt: "In other news", max_tokens: 16, temperature: 1 };
  const a = await sdk.completions.create({ ...p, seed: 1 });
  const b = await sdk.completions.create({ ...p, seed: 1 });
  const c = await sdk.completions.create({ ...p, seed: 2 });
  assert.equal(a.choices[0].text, b.choices[0].text);
  assert.notEqual(a.choices[0].text, c.choices[0].text);
});

test("stop: the text ends before the first match, finish_reason stop, == gpt2-tool generate --stop", async () => {
  // sampled hot with a presence penalty: this random model's text then does not repeat itself
  const p = { prompt: PROMPT, max_tokens: 32, temperature: 1.5, seed: 3, presence_penalty: 1.5 };
  const full = (await sdk.completions.create(p)).choices[0].text;
  // a stop string taken from two thirds into the sampled continuation
  const cut = Math.floor((full.length * 2) / 3);
  const stop = full.slice(cut, cut + 3);
  const at = full.indexOf(stop);
  assert.ok(stop.length === 3 && at > 0, `a stop string inside the text (${JSON.stringify(stop)} at ${at})`);
  const r = await sdk.completions.create({ ...p, stop: [stop, "zzqx"] });
  assert.equal(r.choices[0].finish_reason, "stop");
  assert.equal(r.choices[0].text, full.slice(0, at));
  assert.equal(r.choices[0].text, await toolGenerate({ ...p, stop: [stop, "zzqx"] }));
  const s = textByIndex(await collect(await sdk.completions.create({ ...p, stop, stream: true })));
  assert.equal(s[0], r.choices[0].text);
});

test("logprobs = 3: sampled token's logprob and top-3 == log-softmax of gpt2-tool logits", async () => {
  const prompt = "Hello, my name is";
  const r = await sdk.completions.create({ prompt, max_tokens: 2, temperature: 0, logprobs: 3 });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 2);
  assert.equal(lp.token_logprobs.length, 2);
  assert.equal(lp.top_logprobs.length, 2);
  assert.equal(lp.tokens.join(""), r.choices[0].text);
  // text_offset: where each token starts in the returned text, in bytes (vLLM's convention; the
  // legacy OpenAI API counted from the prompt's start)
  const bytes = Buffer.from(r.choices[0].text);
  lp.tokens.forEach((t, i) => assert.ok(bytes.subarray(lp.text_offset[i]).toString().startsWith(t), `token ${i} at its offset`));
  assert.equal(lp.text_offset[0], 0);
  // the reference: the full next-token distribution from the engine alone, twice (greedy: argmax)
  let ids = tokenize(prompt);
  const scratch = env("GPT2D_SCRATCH");
  for (let pos = 0; pos < 2; pos++) {
    const ls = logSoftmax(toolLogits(ids, join(scratch, `logits${pos}.bin`)));
    const order = ls.map((v, i) => [v, i]).sort((x, y) => y[0] - x[0] || x[1] - y[1]);
    const top = lp.top_logprobs[pos];
    const vals = Object.values(top).sort((x, y) => y - x);
    assert.equal(Object.keys(top).length, 3, `position ${pos}: 3 alternatives`);
    for (let k = 0; k < 3; k++) {
      assert.ok(Math.abs(vals[k] - order[k][0]) < 1e-3, `position ${pos} top ${k}: ${vals[k]} vs ${order[k][0]}`);
    }
    assert.ok(Math.abs(lp.token_logprobs[pos] - order[0][0]) < 1e-3, "greedy: the sampled token is the top one");
    assert.ok(Math.abs(top[lp.tokens[pos]] - lp.token_logprobs[pos]) < 1e-6, "the sampled token is among the top");
    ids = ids.concat(order[0][1]);
  }
  // streamed, the same per-token logprobs arrive in the chunks
  const chunks = await collect(await sdk.completions.create({ prompt, max_tokens: 2, temperature: 0, logprobs: 3, stream: true }));
  const streamedLp = chunks.flatMap((c) => c.choices.flatMap((ch) => (ch.logprobs ? ch.logprobs.token_logprobs : [])));
  assert.deepEqual(streamedLp, lp.token_logprobs);
});

test("echo: the prompt precedes the same completion", async () => {
  const p = { prompt: PROMPT, max_tokens: 10, temperature: 0 };
  const plain = await sdk.completions.create(p);
  const echoed = await sdk.completions.create({ ...p, echo: true });
  assert.equal(echoed.choices[0].text, PROMPT + plain.choices[0].text);
  const s = textByIndex(await collect(await sdk.completions.create({ ...p, echo: true, stream: true })));
  assert.equal(s[0], PROMPT + plain.choices[0].text);
});

test("prompt as an array of strings and as token ids: one choice per prompt, in order", async () => {
  const prompts = ["Hello there", "Good morning"];
  const r = await sdk.completions.create({ prompt: prompts, max_tokens: 6, temperature: 0 });
  assert.equal(r.choices.length, 2);
  for (let i = 0; i < 2; i++) {
    assert.equal(r.choices.find((c) => c.index === i).text, await toolGenerate({ prompt: prompts[i], max_tokens: 6 }));
  }
  const ids = await sdk.completions.create({ prompt: tokenize("Hello there"), max_tokens: 6, temperature: 0 });
  assert.equal(ids.choices[0].text, r.choices.find((c) => c.index === 0).text);
});

test("chat: message from the template's prompt == gpt2-tool generate; streamed deltas == message", async () => {
  const messages = [{ role: "system", content: "You write short emails." }, { role: "user", content: "Say hello to Bob." }];
  const prompt = "You write short emails.\n\nUser: Say hello to Bob.\nAssistant:";
  const r = await sdk.chat.completions.create({ model: "model", messages, max_tokens: 24, temperature: 0 });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.choices[0].message.role, "assistant");
  const want = await toolGenerate({ prompt, max_tokens: 24, stop: "\nUser:" });
  assert.equal(r.choices[0].message.content, want);
  assert.equal(r.usage.prompt_tokens, tokenize(prompt).length);
  const chunks = await collect(await sdk.chat.completions.create({
    messages, max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true },
  }));
  assert.equal(chunks[0].object, "chat.completion.chunk");
  assert.equal(chunks[0].choices[0].delta.role, "assistant");
  assert.equal(textByIndex(chunks, (c) => c.delta && c.delta.content)[0], r.choices[0].message.content);
  assert.equal(chunks.filter((c) => c.choices.length && c.choices[0].finish_reason).length, 1);
  assert.deepEqual(chunks[chunks.length - 1].usage, r.usage);
});

test("chat, n = 2 sampled: choice i is seed + i", async () => {
  const messages = [{ role: "user", content: "Write a subject line." }];
  const r = await sdk.chat.completions.create({ messages, max_tokens: 10, temperature: 0.8, seed: 11, n: 2 });
  for (let i = 0; i < 2; i++) {
    const want = await toolGenerate({
      prompt: "User: Write a subject line.\nAssistant:", max_tokens: 10, temperature: 0.8, seed: 11 + i, stop: "\nUser:",
    });
    assert.equal(r.choices.find((c) => c.index === i).message.content, want);
  }
});

test("raw SSE (fetch, as a browser reads it): data: lines, [DONE] last, same text as the SDK", async () => {
  const p = { prompt: PROMPT, max_tokens: 12, temperature: 0 };
  const { events, done, raw, headers } = await sseCompletion(URL, p);
  assert.match(headers.get("content-type"), /^text\/event-stream/);
  assert.ok(done && raw.trimEnd().endsWith("data: [DONE]"));
  const whole = await sdk.completions.create(p);
  assert.equal(textByIndex(events)[0], whole.choices[0].text);
});

test("errors are the SDK's typed exceptions with OpenAI's shape", async () => {
  const bad = async (body, Cls, status, field) => {
    const e = await sdk.completions.create(body).then(() => null, (x) => x);
    assert.ok(e instanceof Cls, `${JSON.stringify(body).slice(0, 80)}: ${e && e.constructor.name} ${e && e.message}`);
    assert.equal(e.status, status);
    assert.equal(typeof e.error.message, "string");
    if (field) assert.ok(e.param === field || e.code === field, `param/code names ${field}: ${e.param} ${e.code}`);
    return e;
  };
  await bad({ prompt: "x", suffix: "y" }, OpenAI.BadRequestError, 400, "suffix");
  await bad({ prompt: "x", best_of: 3 }, OpenAI.BadRequestError, 400, "best_of");
  await bad({ prompt: "x", temperature: -1 }, OpenAI.BadRequestError, 400, "temperature");
  await bad({ prompt: "x", max_tokens: "many" }, OpenAI.BadRequestError, 400, "max_tokens");
  await bad({ prompt: "x", logprobs: 9 }, OpenAI.BadRequestError, 400, "logprobs");
  await bad({ prompt: "x", frobnicate: 1 }, OpenAI.BadRequestError, 400, "frobnicate");
  await bad({ prompt: "word ".repeat(400), max_tokens: 4 }, OpenAI.UnprocessableEntityError, 422, "prompt_too_long");
  await bad({ prompt: "x", model: "gpt-4" }, OpenAI.NotFoundError, 404);
  const e = await sdk.chat.completions.create({ messages: [{ role: "wizard", content: "x" }] }).then(() => null, (x) => x);
  assert.ok(e instanceof OpenAI.BadRequestError, String(e));
  // a body that is not JSON at all
  const r = await fetch(URL + "/v1/completions", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{nope" });
  assert.equal(r.status, 400);
  const j = await r.json();
  assert.equal(j.error.type, "invalid_request_error");
  // after all these, the gateway still serves
  const ok = await sdk.completions.create({ prompt: "still", max_tokens: 2 });
  assert.equal(ok.choices.length, 1);
});

test("overload: a flood on 1 slot + max-queue 1 gets RateLimitError (429, Retry-After), the rest complete", async () => {
  const busy = client(env("GPT2D_URL_busy"));
  const N = 8;
  const results = await Promise.all(Array.from({ length: N }, (_, i) =>
    busy.completions.create({ prompt: `flood ${i}`, max_tokens: 8, temperature: 0 }).then((r) => ({ i, r }), (e) => ({ i, e }))));
  const limited = results.filter((x) => x.e instanceof OpenAI.RateLimitError).map((x) => x.e);
  const served = results.filter((x) => x.r);
  const other = results.filter((x) => x.e && !(x.e instanceof OpenAI.RateLimitError)).map((x) => String(x.e));
  assert.deepEqual(other, [], "no other error");
  assert.ok(limited.length >= 1, `at least one 429 (${limited.length} of ${N})`);
  assert.ok(served.length >= 2, `the slot and the queue place are served (${served.length})`);
  for (const e of limited) {
    assert.equal(e.status, 429);
    assert.equal(e.error.type, "rate_limit_error");
    assert.equal(e.code, "queue_full");
    assert.ok(Number(e.headers.get("retry-after")) >= 1, "Retry-After");
  }
  for (const { i, r } of served) {
    assert.equal(r.choices[0].text, await toolGenerate({ prompt: `flood ${i}`, max_tokens: 8 }), `served ${i}`);
  }
  await waitIdle(env("GPT2D_EP_busy"));
});

test("API keys: none or a wrong one is AuthenticationError (401); the right one serves", async () => {
  const url = env("GPT2D_URL_auth");
  for (const key of ["sk-wrong", env("GPT2D_API_KEY") + "x"]) {
    const e = await client(url, key).completions.create({ prompt: "x", max_tokens: 1 }).then(() => null, (x) => x);
    assert.ok(e instanceof OpenAI.AuthenticationError, String(e));
    assert.equal(e.status, 401);
  }
  const noKey = await fetch(url + "/v1/completions", { method: "POST", body: "{}" });
  assert.equal(noKey.status, 401);
  const e2 = await client(url, "sk-wrong").models.list().then(() => null, (x) => x);
  assert.ok(e2 instanceof OpenAI.AuthenticationError);
  const good = client(url, env("GPT2D_API_KEY"));
  const r = await good.completions.create({ prompt: PROMPT, max_tokens: 8, temperature: 0 });
  assert.equal(r.choices[0].text, await toolGenerate({ prompt: PROMPT, max_tokens: 8 }));
  // probes stay open without a key
  assert.equal((await fetch(url + "/health")).status, 200);
  assert.equal((await fetch(url + "/metrics")).status, 200);
});

test("after everything: nothing left running on the broker", async () => {
  await sleep(100);
  const s = await waitIdle(env("GPT2D_EP_main"));
  assert.equal(s.running, 0);
  assert.equal(s.queue, 0);
});
