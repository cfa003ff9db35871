// util.mjs — what the node tests of gpt2d-http share: the gateways the shell script started (from
// the environment), the openai SDK client, the independent references (gpt2-tool generate/tokenize
// and gpt2c over ZeroMQ), and raw HTTP/SSE helpers for what the SDK hides.
import { execFileSync, execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import OpenAI from "openai";

const run = promisify(execFile);

export function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the node tests through tests/test_http_*.sh`);
  return v;
}

export const TOOL = () => env("GPT2D_TOOL");
export const MODEL = () => env("GPT2D_MODEL");

// The openai SDK on a gateway: no retries (a 429 must surface), bounded time.
export function client(base, apiKey = "sk-none") {
  return new OpenAI({ baseURL: base + "/v1", apiKey, maxRetries: 0, timeout: 60000 });
}

// `gpt2-tool generate` for the same parameters: the in-process engine, no broker, no gateway.
export async function toolGenerate({ prompt, max_tokens, temperature = 0, seed, top_p, top_k, stop, ignore_eos,
  presence_penalty, frequency_penalty }) {
  const args = ["generate", "--model", MODEL(), "--prompt", prompt, "-n", String(max_tokens),
    "--temperature", String(temperature)];
  if (seed !== undefined) args.push("--seed", String(seed));
  if (top_p !== undefined) args.push("--top-p", String(top_p));
  if (top_k !== undefined) args.push("--top-k", String(top_k));
  if (presence_penalty !== undefined) args.push("--presence-penalty", String(presence_penalty));
  if (frequency_penalty !== undefined) args.push("--frequency-penalty", String(frequency_penalty));
  for (const s of [].concat(stop || [])) args.push("--stop", s);
  if (ignore_eos) args.push("--ignore-eos");
  const { stdout } = await run(TOOL(), args, { encoding: "buffer", timeout: 60000, maxBuffer: 1 << 24 });
  return stdout.toString("utf8");
}

export function tokenize(text) {
  const out = execFileSync(TOOL(), ["tokenize", "--model", MODEL()], { input: text, timeout: 30000 });
  return out.toString().trim().split(/\s+/).filter(Boolean).map(Number);
}

// The full next-token logits after `ids` (gpt2-tool logits --out: V little-endian float32).
export function toolLogits(ids, file) {
  execFileSync(TOOL(), ["logits", "--model", MODEL(), "--ids", ids.join(","), "--out", file], { timeout: 30000 });
  const b = readFileSync(file);
  const f = new Float32Array(b.buffer, b.byteOffset, b.length / 4);
  return Array.from(f);
}

export function logSoftmax(logits) {
  let max = -Infinity;
  for (const x of logits) if (x > max) max = x;
  let sum = 0;
  for (const x of logits) sum += Math.exp(x - max);
  const lse = max + Math.log(sum);
  return logits.map((x) => x - lse);
}

// The broker's own view (over ZeroMQ, not through the gateway): gpt2c stats --json.
export async function brokerStats(endpoint) {
  const { stdout } = await run(env("GPT2C"), ["stats", "--json", "--connect", endpoint], { timeout: 10000 });
  return JSON.parse(stdout);
}

// Waits until the broker has nothing running or queued; returns the last stats. Bounded by ms.
export async function waitIdle(endpoint, ms = 15000) {
  const end = Date.now() + ms;
  let s;
  while (Date.now() < end) {
    s = await brokerStats(endpoint);
    if (s.running === 0 && s.queue === 0) return s;
    await sleep(100);
  }
  return s;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A streamed completion read with fetch() and a hand-written SSE parser (what a browser does):
// the events' JSON payloads, whether [DONE] came, and the raw text. Throws on a non-200.
export async function sseCompletion(base, body, { path = "/v1/completions", headers = {}, signal } = {}) {
  const r = await fetch(base + path, {
    method: "POST", signal,
    headers: Object.assign({ "Content-Type": "application/json" }, headers),
    body: JSON.stringify(Object.assign({ stream: true }, body)),
  });
  if (r.status !== 200) throw Object.assign(new Error(`HTTP ${r.status}: ${await r.text()}`), { status: r.status });
  const raw = await r.text();
  const events = [];
  let done = false;
  for (const block of raw.split("\n\n")) {
    if (!block.trim()) continue;
    const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
    if (data === "[DONE]") done = true;
    else events.push(JSON.parse(data));
  }
  return { events, done, raw, headers: r.headers };
}

// Concatenated text per choice index of streamed completion chunks.
export function textByIndex(chunks, pick = (c) => c.text) {
  const out = [];
  for (const ch of chunks) for (const c of ch.choices || []) out[c.index] = (out[c.index] || "") + (pick(c) || "");
  return out;
}
