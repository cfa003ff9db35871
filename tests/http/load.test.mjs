// load.test.mjs — 256 concurrent SSE streams through gpt2d-http, each byte-identical to the same
// request over ZeroMQ (gpt2c batch against the same broker), while one client never reads its
// stream and 50 others hang up mid-stream; the gateway cancels the hang-ups' requests and, once its
// bounded buffer is full, the non-reader's; afterwards nothing runs or waits on the broker.
// Run by tests/test_http_load.sh (GPT2D_URL_main: the gateway, GPT2D_EP_main: its broker).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { env, brokerStats, waitIdle, sleep } from "./util.mjs";

const run = promisify(execFile);
const URL = env("GPT2D_URL_main");
const EP = env("GPT2D_EP_main");
const N = 256, N_DISCONNECT = 50;

// Request i of a mixed workload (as tests/tutil.h's tu_req_make): greedy and sampled, top-k/top-p,
// stop strings, multi-byte UTF-8 prompts, 8..16 tokens.
function request(i) {
  const heads = ["Hello, my name is", "The quick brown fox", "Dear team,\n\nThanks for", "Once upon a time",
    "Café au lait, naïve façade:", "日本語のテキスト", "Subject: Partnership\n\n", "Emoji 🙂 and Ωmega"];
  const r = { prompt: `${heads[i % 8]} ${i}`, max_tokens: 8 + ((i * 37) % 9), seed: i * 7919, temperature: 0 };
  if (i % 3 !== 0) {
    r.temperature = Math.round((0.6 + 0.1 * (i % 7)) * 10) / 10;
    r.top_k = (i % 4) * 25;
    r.top_p = i % 2 ? 0.92 : 1;
  }
  if (i % 5 === 1) r.stop = ["e"];
  if (i % 5 === 3) r.stop = ["\n\n", "ing ", "o"];
  return r;
}

// One SSE stream read to its end: the text, the finish_reason, the usage, whether [DONE] came.
async function stream(body) {
  const r = await fetch(URL + "/v1/completions", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (r.status !== 200) return { error: `HTTP ${r.status} ${await r.text()}` };
  const raw = await r.text();
  const out = { text: "", finish: null, usage: null, done: false, errors: [] };
  for (const block of raw.split("\n\n")) {
    if (!block.startsWith("data: ")) continue;
    const data = block.slice(6);
    if (data === "[DONE]") { out.done = true; continue; }
    const j = JSON.parse(data);
    if (j.error) out.errors.push(j.error);
    if (j.usage) out.usage = j.usage;
    for (const c of j.choices || []) {
      out.text += c.text || "";
      if (c.finish_reason) out.finish = c.finish_reason;
    }
  }
  return out;
}

// A stream abandoned mid-way: reads until two events with text arrived, then aborts the fetch
// (the TCP connection is closed). Resolves to the number of events read.
async function hangUp(i) {
  const ac = new AbortController();
  const r = await fetch(URL + "/v1/completions", {
    method: "POST", signal: ac.signal, headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: `Hang up ${i}:`, max_tokens: 200, temperature: 1, seed: i, ignore_eos: true, stream: true }),
  });
  if (r.status !== 200) throw new Error(`hang-up ${i}: HTTP ${r.status} ${await r.text()}`);
  const reader = r.body.getReader(), dec = new TextDecoder();
  let seen = "", events = 0;
  while (events < 2) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += dec.decode(value, { stream: true });
    events = seen.split("\n\n").filter((b) => b.includes('"text":"') && !b.includes('"text":""')).length;
  }
  ac.abort();
  return events;
}

// A client that sends a big streaming request and then never reads a byte of the answer.
function nonReader() {
  // 4 prompts x n 16 = 64 requests of 240 tokens with top-5 logprobs: ~6 MB of events, more than
  // the socket buffers of a connection whose reader never reads can hold
  const body = JSON.stringify({ prompt: ["I never read:", "Nor do I:", "Not a byte:", "Never:"], max_tokens: 240, n: 16,
    logprobs: 5, temperature: 1, ignore_eos: true, stream: true });
  const u = new globalThis.URL(URL);
  const sock = net.connect({ host: u.hostname, port: Number(u.port) });
  sock.on("error", () => {});
  sock.pause();
  sock.write(`POST /v1/completions HTTP/1.1\r\nHost: ${u.host}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  return sock;
}

const scratch = env("GPT2D_SCRATCH");
const reqs = Array.from({ length: N }, (_, i) => request(i));
let ref, before, gwBefore, results, read, slow;

test("reference: the 256 requests over ZeroMQ (gpt2c batch, same broker)", { timeout: 120000 }, async () => {
  writeFileSync(join(scratch, "load.jsonl"), reqs.map((r, i) => JSON.stringify({ id: `r${i}`, ...r })).join("\n") + "\n");
  await run(env("GPT2C"), ["batch", join(scratch, "load.jsonl"), "-c", "64", "-o", join(scratch, "load.out.jsonl"),
    "--connect", EP, "--no-progress"], { timeout: 120000 });
  ref = new Map(readFileSync(join(scratch, "load.out.jsonl"), "utf8").trim().split("\n").map((l) => {
    const j = JSON.parse(l);
    return [j.id, j];
  }));
  assert.equal(ref.size, N);
  assert.ok([...ref.values()].every((z) => z.finish_reason !== "error"), "no error over ZeroMQ");
  before = await brokerStats(EP);
  gwBefore = await (await fetch(URL + "/v1/stats")).json();
});

test("256 concurrent SSE streams, with a non-reader and 50 hang-ups alongside, all complete", { timeout: 120000 }, async () => {
  slow = nonReader();
  const hangUps = Array.from({ length: N_DISCONNECT }, (_, i) => hangUp(i).catch((e) => String(e)));
  results = await Promise.all(reqs.map((r) => stream(r)));
  read = await Promise.all(hangUps);
  assert.deepEqual(results.filter((h) => h.error).map((h) => h.error), []);
  assert.deepEqual(read.filter((n) => typeof n !== "number"), [], "hang-up clients that failed");
  assert.ok(read.every((n) => n >= 1), "every hang-up client saw its stream start");
});

test("each HTTP stream is byte-identical to the ZeroMQ path (text, finish_reason, usage)", () => {
  assert.ok(results, "the streams ran");
  let same = 0;
  const diffs = [];
  results.forEach((h, i) => {
    const z = ref.get(`r${i}`);
    const finish = z.finish_reason === "eos" ? "stop" : z.finish_reason;
    const ok = !h.error && h.done && h.errors.length === 0 && h.text === z.text && h.finish === finish &&
      h.usage && h.usage.completion_tokens === z.usage.completion_tokens && h.usage.prompt_tokens === z.usage.prompt_tokens;
    if (ok) same++;
    else if (diffs.length < 5) diffs.push({ i, http: h, zmq: { text: z.text, finish: z.finish_reason, usage: z.usage } });
  });
  assert.deepEqual(diffs, [], "streams that differ from the ZeroMQ path");
  assert.equal(same, N);
  const stopped = results.filter((h) => h.finish === "stop").length;
  assert.ok(stopped > 0 && stopped < N, `both finish reasons occur (${stopped} stopped)`);
});

test("the non-reader, still connected and unread, leaves nothing running on the broker", { timeout: 60000 }, async (t) => {
  // the gateway cancels its requests once its buffer is full (or they ended into the buffers)
  const idle = await waitIdle(EP, 20000);
  assert.equal(idle.running, 0, "nothing running while the non-reader is still connected");
  assert.equal(idle.queue, 0);
  t.diagnostic(`non-reader: socket ${slow.destroyed ? "closed" : "still open"}, nothing read`);
  slow.destroy();
});

test("afterwards: broker and gateway back to 0 running; every request ended; hang-ups cancelled", { timeout: 60000 }, async (t) => {
  const after = await waitIdle(EP, 10000);
  assert.equal(after.running, 0);
  assert.equal(after.queue, 0);
  for (const w of after.workers) assert.equal(w.running, 0, `worker ${w.name} runs nothing`);
  // the broker saw every request of this test end: 256 + 50 + 64 (the non-reader's 4 x n) more
  assert.equal(after.requests_total - before.requests_total, N + N_DISCONNECT + 64);
  await sleep(200);
  const gw = await (await fetch(URL + "/v1/stats")).json();
  assert.equal(gw.running, 0);
  assert.equal(gw.http.active, 0, "no active HTTP request in the gateway");
  t.diagnostic(`finish reasons: ${JSON.stringify(gw.finish)}`);
  // cancelled: the 50 hang-ups and the non-reader's 64 (its unread output passed the bound)
  assert.equal(gw.finish.cancelled - gwBefore.finish.cancelled, N_DISCONNECT + 64);
  assert.equal(gw.finish.error, gwBefore.finish.error, "no request ended in error");
});
