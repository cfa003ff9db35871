// page.test.mjs — the status page (GET /) in headless Chromium (Debian's /usr/bin/chromium, driven
// by playwright-core): it loads with no request leaving the gateway, its charts fill from the stats
// polls while other clients generate, the prompt box streams a completion whose text equals
// gpt2-tool generate's, and a screenshot of it all is saved to $GPT2D_SCREENSHOT.
// Run by tests/test_http_page.sh (GPT2D_URL_main: the gateway, GPT2D_EP_main: its broker).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { env, client, toolGenerate, waitIdle, sleep } from "./util.mjs";

const URL = env("GPT2D_URL_main");
const SHOT = env("GPT2D_SCREENSHOT");
const CHROMIUM = process.env.GPT2D_CHROMIUM || "/usr/bin/chromium";
let context, page, profile;
const foreign = [], consoleErrors = [];

before(async () => {
  profile = mkdtempSync(join(env("GPT2D_SCRATCH"), "chromium-"));
  // a fresh profile (--user-data-dir, which playwright passes for a persistent context)
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60000,
    viewport: { width: 1280, height: 1000 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(30000);
  page.on("request", (r) => { if (!r.url().startsWith(URL + "/")) foreign.push(r.url()); });
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
});

after(async () => {
  if (context) await context.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

test("GET / is the status page, served as HTML", async () => {
  const r = await fetch(URL + "/");
  assert.equal(r.status, 200);
  assert.match(r.headers.get("content-type"), /^text\/html/);
  const html = await r.text();
  assert.match(html, /<canvas id="c-tps"/);
  assert.doesNotMatch(html, /(src|href)=["']https?:/, "no external resource");
});

test("the charts fill from the stats polls while clients generate; nothing is fetched elsewhere", async () => {
  await page.goto(URL + "/", { waitUntil: "load" });
  // background load through the SDK while the page polls: three waves of sampled requests
  const sdk = client(URL);
  const load = (async () => {
    for (let wave = 0; wave < 3; wave++) {
      await Promise.all(Array.from({ length: 6 }, (_, i) => sdk.completions.create({
        prompt: `Status page wave ${wave} request ${i}`, max_tokens: 40, temperature: 0.8, seed: i, ignore_eos: true,
      })));
      await sleep(300);
    }
  })();
  await page.waitForFunction(() => window.gpt2dStatus.samples >= 3);
  await load;
  // wait until the polls have seen throughput and latency (the broker's 10 s window)
  await page.waitForFunction(() => {
    const s = window.gpt2dStatus.series;
    return (s.tps || []).some((v) => v > 0) && (s.ttft_p50 || []).some((v) => v > 0) &&
      (s.itl_p50 || []).some((v) => v > 0) && window.gpt2dStatus.last.requests >= 18;
  });
  const st = await page.evaluate(() => ({ last: window.gpt2dStatus.last, errors: window.gpt2dStatus.errors }));
  assert.equal(st.errors, 0, "every stats poll succeeded");
  assert.equal(st.last.workers.length, 1);
  assert.equal(await page.textContent("#ready"), "ready");
  assert.equal(await page.textContent("#model"), "model");
  // the throughput chart has non-background pixels of the series colour (it was drawn, with data)
  const drawn = await page.evaluate(() => {
    const c = document.getElementById("c-tps");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let blue = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 180 && d[i] < 90 && d[i + 3] > 200) blue++;
    return blue;
  });
  assert.ok(drawn > 50, `the throughput line is drawn (${drawn} px)`);
  assert.deepEqual(foreign, [], "no request to another origin");
});

test("the prompt box streams a completion: text == gpt2-tool generate, shown as it arrives", async () => {
  const prompt = "Dear Maria,\n\nThank you for";
  await page.fill("#prompt", prompt);
  await page.fill("#max_tokens", "48");
  await page.fill("#temperature", "0.7");
  await page.fill("#seed", "5");
  await page.click("#send");
  await page.waitForFunction(() => window.gpt2dStatus.streams === 1, null, { timeout: 60000 });
  const shown = await page.textContent("#gen-text");
  const streamed = await page.evaluate(() => window.gpt2dStatus.streamed);
  const want = await toolGenerate({ prompt, max_tokens: 48, temperature: 0.7, seed: 5 });
  assert.equal(streamed, want);
  assert.equal(shown, want);
  const info = await page.textContent("#gen-info");
  assert.match(info, /pieces in \d+ ms .* finish: (length|stop)$/);
  assert.doesNotMatch(info, /without \[DONE\]/);
});

test("screenshot of the page with its charts and the streamed completion", async () => {
  await sleep(1200); // one more poll, so the charts include the prompt box's request
  await page.screenshot({ path: SHOT, fullPage: true });
  assert.ok(statSync(SHOT).size > 20000, "a real screenshot");
  assert.deepEqual(consoleErrors, [], "no error in the page's console");
  assert.deepEqual(foreign, []);
  const s = await waitIdle(env("GPT2D_EP_main"));
  assert.equal(s.running, 0);
});
