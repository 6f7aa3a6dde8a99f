// Page weight and time to first paint of the hub's pages, in Debian's Chromium (headless,
// playwright-core), against a floor measured in the same run: a one-line HTML page served by
// Python's http.server. Each load is in a fresh browser context (nothing cached); "warm" loads
// reload in the same context (the files revalidate with ETag: 304s).
//
//   cargo build --release
//   cp benches/page_load.mjs /tmp/pw/ && node /tmp/pw/page_load.mjs --binary target/release/gambiarra [--runs 20]

import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const BIN = args.binary || "target/release/gambiarra";
const RUNS = Number(args.runs || 20);
const children = [];

const freePort = () => new Promise((resolve) => {
  const s = createServer();
  s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(fn) {
  for (let i = 0; i < 200; i++) { try { if (await fn()) return; } catch (_) { /* not yet */ } await sleep(50); }
  throw new Error("timed out");
}

const hubPort = await freePort();
const mockPort = await freePort();
const floorPort = await freePort();
const HUB = `http://127.0.0.1:${hubPort}`;
children.push(spawn(BIN, ["serve", "--host", "127.0.0.1", "--port", String(hubPort), "--quiet"], { stdio: "ignore" }));
children.push(spawn(BIN, ["mock-llm", "--port", String(mockPort), "--tokens", "20", "--token-delay-ms", "1"], { stdio: "ignore" }));
const floorDir = mkdtempSync(join(tmpdir(), "floor-"));
writeFileSync(join(floorDir, "index.html"), "<!doctype html><meta charset=utf-8><title>floor</title><h1>Hello</h1>");
children.push(spawn("python3", ["-m", "http.server", String(floorPort), "--bind", "127.0.0.1", "--directory", floorDir], { stdio: "ignore" }));
await until(async () => (await fetch(`${HUB}/health`)).ok);
await until(async () => (await fetch(`http://127.0.0.1:${floorPort}/`)).ok);

const post = (path, body) => fetch(HUB + path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }).then((r) => r.json());
const { room } = await post("/rooms", { name: "Bench" });
for (const id of ["ana", "bruno", "carla"]) {
  await post(`/rooms/${room.code}/join`, { id, nickname: id, model: "llama3", endpoint: `http://127.0.0.1:${mockPort}`, specs: { gpu: "RTX 4090", vram: 24, ram: 64, cpu: "Ryzen 9" } });
}
// Some history for the sparklines and the feed.
for (let i = 0; i < 30; i++) {
  await fetch(`${HUB}/rooms/${room.code}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: "*", stream: true, messages: [{ role: "user", content: "hi" }] }) }).then((r) => r.text());
}

const browser = await chromium.launch({
  executablePath: args.chromium || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});

/** One load: first contentful paint, DOMContentLoaded, the moment the page shows its data (a
 *  selector), and the bytes transferred (headers included) and decoded. */
async function load(page, url, ready) {
  const t0 = Date.now();
  await page.goto(url, { waitUntil: "domcontentloaded" });
  if (ready) await page.waitForSelector(ready);
  const readyMs = Date.now() - t0;
  const m = await page.evaluate(() => {
    const nav = performance.getEntriesByType("navigation")[0];
    const res = performance.getEntriesByType("resource").filter((r) => !r.name.includes("/events"));
    const fcp = performance.getEntriesByType("paint").find((p) => p.name === "first-contentful-paint");
    return {
      fcp: fcp ? fcp.startTime : NaN,
      dcl: nav.domContentLoadedEventEnd,
      transferred: nav.transferSize + res.reduce((a, r) => a + r.transferSize, 0),
      decoded: nav.decodedBodySize + res.reduce((a, r) => a + r.decodedBodySize, 0),
      requests: 1 + res.length,
    };
  });
  return { ...m, ready: readyMs };
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const p90 = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * 0.9))]; };

async function measure(name, url, ready) {
  const cold = [];
  const warm = [];
  for (let i = 0; i < RUNS; i++) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await ctx.newPage();
    cold.push(await load(page, url, ready));
    warm.push(await load(page, url, ready));
    await ctx.close();
  }
  const row = (label, xs) => ({
    page: name, load: label,
    fcp_ms_p50: +median(xs.map((x) => x.fcp)).toFixed(1), fcp_ms_p90: +p90(xs.map((x) => x.fcp)).toFixed(1),
    ready_ms_p50: median(xs.map((x) => x.ready)),
    requests: xs[0].requests, transferred_bytes: median(xs.map((x) => x.transferred)), decoded_bytes: median(xs.map((x) => x.decoded)),
  });
  return [row("cold", cold), row("warm", warm)];
}

const rows = [
  ...await measure("floor: one-line HTML (python http.server)", `http://127.0.0.1:${floorPort}/`, "h1"),
  ...await measure("home page", `${HUB}/`, "#rooms-body a"),
  ...await measure("room page (3 participants, 30 requests of history)", `${HUB}/rooms/${room.code}`, '#cards article[data-id="carla"] .spark'),
];
console.table(rows);
console.log(JSON.stringify(rows));
await browser.close();
for (const c of children) c.kill("SIGTERM");
