// The room page and the home page in a real browser: Debian's Chromium, headless, driven by
// playwright-core (no browser download). Starts its own hub (with a state file, so it can be
// restarted), a mock LLM, and the real `gambiarra join` agent, then checks what a person in the
// room would see:
//   - a participant's card appears within 2 s of its join;
//   - it shows busy while a chat streams, and online again after;
//   - the chat box streams the answer;
//   - the page reconnects after the hub restarts, and shows the participant again;
//   - a hostile nickname and model name are shown as text, never run;
//   - a protected room asks for the password, keeps it out of the URL and of storage;
//   - the home page lists rooms and creates one;
//   - no Content-Security-Policy violation, no uncaught error, every control labelled.
// Screenshots (desktop and phone) go to --out; page weight and time to first paint are printed.
//
//   node room_page.mjs --binary target/debug/gambiarra --out target/screenshots

import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const BIN = args.binary || "target/debug/gambiarra";
const OUT = args.out || "target/screenshots";
const CHROMIUM = args.chromium || "/usr/bin/chromium";
mkdirSync(OUT, { recursive: true });

const children = [];
let failures = 0;
let passes = 0;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

function run(cmd, argv, name) {
  const child = spawn(cmd, argv, { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr.on("data", (d) => { err = (err + d).slice(-4000); });
  child.on("exit", (code, signal) => {
    if (!child.expectedExit) console.log(`  (${name} exited: ${code ?? signal}) ${err.trim().split("\n").slice(-3).join(" | ")}`);
  });
  children.push(child);
  return child;
}

async function stop(child) {
  child.expectedExit = true;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise((r) => child.on("exit", r));
  child.kill("SIGTERM");
  await done;
}

async function until(what, fn, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try { if ((last = await fn())) return last; } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

async function check(name, fn) {
  const t = Date.now();
  try {
    await fn();
    passes++;
    console.log(`ok    ${name} (${Date.now() - t} ms)`);
  } catch (e) {
    failures++;
    console.log(`FAIL  ${name}: ${e.message}`);
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

async function json(url, opts = {}) {
  const r = await fetch(url, { ...opts, headers: { "Content-Type": "application/json", ...(opts.headers || {}) } });
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error(`${opts.method || "GET"} ${url}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

// ------------------------------------------------------------------------------------ set-up
const hubPort = await freePort();
const mockPort = await freePort();
const HUB = `http://127.0.0.1:${hubPort}`;
const stateDir = mkdtempSync(join(tmpdir(), "gambiarra-browser-"));
const stateFile = join(stateDir, "rooms.json");
const startHub = () => run(BIN, ["serve", "--host", "127.0.0.1", "--port", String(hubPort), "--quiet", "--state", stateFile], "hub");
let hub = startHub();
// 40 tokens 50 ms apart: a two-second stream, long enough to see "busy".
run(BIN, ["mock-llm", "--port", String(mockPort), "--tokens", "40", "--token-delay-ms", "50", "--model", "llama3"], "mock");
await until("the hub", async () => (await fetch(`${HUB}/health`)).ok);
await until("the mock", async () => (await fetch(`http://127.0.0.1:${mockPort}/v1/models`)).ok);

const { room } = await json(`${HUB}/rooms`, { method: "POST", body: JSON.stringify({ name: "Browser test room" }) });
const CODE = room.code;

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // As root in a container, without a GPU or a network beyond loopback.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const problems = [];
let expectNetworkErrors = false;
page.on("pageerror", (e) => problems.push("uncaught: " + e.message));
page.on("console", (m) => {
  const text = m.text();
  if (/Content.Security.Policy|Refused to/i.test(text)) problems.push("CSP: " + text);
  else if (m.type() === "error" && !(expectNetworkErrors && /ERR_CONNECTION_REFUSED|Failed to load resource|net::/.test(text))) {
    problems.push("console: " + text);
  }
});

const card = (id) => page.locator(`#cards article[data-id="${id}"]`);
const roomUrl = `${HUB}/rooms/${CODE}`;
let weight = null;

// ------------------------------------------------------------------------------------ checks
await check("the room page loads with its security headers, JSON stays JSON", async () => {
  const resp = await page.goto(roomUrl);
  assert(resp.status() === 200, "status " + resp.status());
  const csp = resp.headers()["content-security-policy"] || "";
  assert(csp.includes("script-src 'self'") && !csp.includes("unsafe"), "CSP: " + csp);
  assert(resp.headers()["x-frame-options"] === "DENY", "X-Frame-Options");
  await until("Live", async () => (await page.locator("#live").textContent()) === "Live");
  const api = await json(roomUrl);
  assert(api.room.code === CODE && api.links.openai.endsWith(`/rooms/${CODE}/v1`), JSON.stringify(api));
});

await check("page weight and time to first paint", async () => {
  const m = await page.evaluate(() => {
    const nav = performance.getEntriesByType("navigation")[0];
    const res = performance.getEntriesByType("resource");
    const paint = performance.getEntriesByType("paint").find((p) => p.name === "first-contentful-paint");
    return {
      firstContentfulPaintMs: paint ? Math.round(paint.startTime) : null,
      domContentLoadedMs: Math.round(nav.domContentLoadedEventEnd),
      html: nav.decodedBodySize,
      files: res.filter((r) => r.name.includes("/ui/") || r.name.includes("qr.svg")).map((r) => [r.name.replace(/^.*\//, ""), r.decodedBodySize]),
    };
  });
  m.totalBytes = m.html + m.files.reduce((a, [, n]) => a + n, 0);
  weight = m;
  assert(m.totalBytes < 100 * 1024, "page weight " + m.totalBytes);
  console.log("      " + JSON.stringify(m));
});

let joinedAt = 0;
const agent = await (async () => {
  joinedAt = Date.now();
  return run(BIN, ["join", "--hub", HUB, "--code", CODE, "--model", "llama3", "--endpoint", `http://127.0.0.1:${mockPort}`,
    "--nickname", "alice", "--id", "alice", "--direct", "--no-specs", "--health-interval-ms", "1000", "--parallel", "2"], "agent");
})();

await check("a participant shows within 2 s of its join", async () => {
  // The agent probes its server first: the join is when the hub lists it.
  const listed = await until("the join", async () => {
    const { participants } = await json(`${roomUrl}/participants`);
    return participants.some((p) => p.id === "alice") && Date.now();
  });
  await card("alice").waitFor({ timeout: 2000 });
  const shownMs = Date.now() - listed;
  assert(shownMs <= 2000, `shown ${shownMs} ms after the join`);
  assert((await card("alice").locator("h3").textContent()) === "alice", "nickname");
  assert((await card("alice").getAttribute("data-status")) === "online", "online");
  console.log(`      shown ${shownMs} ms after the hub listed it (agent started ${listed - joinedAt} ms before)`);
});

await check("the chat box streams an answer; the card is busy meanwhile, then online", async () => {
  await page.selectOption("#chat-model", "alice");
  await page.fill("#chat-input", "Say something");
  await page.click("#chat-send");
  await until("busy", async () => (await card("alice").getAttribute("data-status")) === "busy", 3000);
  const answer = page.locator("#transcript .msg.assistant").last();
  // Streaming: part of the answer is on screen while the Stop button still works.
  await until("a partial answer", async () => {
    const text = (await answer.textContent()) || "";
    return text.length > "Answer (alice)".length + 3 && !(await page.locator("#chat-stop").isDisabled());
  }, 5000);
  await until("the end of the answer", async () => await page.locator("#chat-stop").isDisabled(), 10000);
  const text = await answer.textContent();
  assert(!/Error/.test(text), "answer: " + text);
  await until("online again", async () => (await card("alice").getAttribute("data-status")) === "online", 5000);
  await until("its speed on the card", async () => /tok\/s/.test(await card("alice").textContent()), 3000);
  await until("the feed", async () => (await page.locator("#feed li").count()) >= 3, 3000);
});

await check("requests from elsewhere show as busy and fill the sparkline", async () => {
  const body = JSON.stringify({ model: "alice", stream: true, messages: [{ role: "user", content: "hi" }] });
  const runs = [0, 1, 2].map(() => fetch(`${roomUrl}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body }).then((r) => r.text()));
  await until("busy", async () => (await card("alice").getAttribute("data-status")) === "busy", 3000);
  // Two slots: the third waits in the queue.
  await until("the queue", async () => /1 request waiting/.test(await page.locator("#summary").textContent()), 3000);
  await Promise.all(runs);
  await until("online again", async () => (await card("alice").getAttribute("data-status")) === "online", 5000);
  await until("the queue empty", async () => /0 requests waiting/.test(await page.locator("#summary").textContent()), 3000);
  const points = await card("alice").locator("polyline").getAttribute("points");
  assert(points && points.split(" ").length >= 4, "sparkline " + points);
});

await check("a hostile nickname and model name are shown as text", async () => {
  const nick = `<img src=x onerror="window.__pwned=1">`;
  const model = `<script>window.__pwned=2</script>`;
  await json(`${roomUrl}/join`, {
    method: "POST",
    body: JSON.stringify({ id: "mallory", nickname: nick, model, endpoint: `http://127.0.0.1:${mockPort}` }),
  });
  await card("mallory").waitFor({ timeout: 2000 });
  assert((await card("mallory").locator("h3").textContent()) === nick, "nickname as text");
  assert((await card("mallory").locator("ul.models li").first().textContent()) === model, "model as text");
  assert((await page.locator("#cards img, #cards script, #feed img").count()) === 0, "an element was injected");
  const optionText = await page.locator("#chat-model option[value=mallory]").textContent();
  assert(optionText.includes(nick) && optionText.includes("(mallory)"), "option " + optionText);
  // Nothing a participant chose goes into the copy-paste code.
  for (const tab of await page.locator("[role=tab]").all()) {
    await tab.click();
    const code = await page.locator("#snippet").textContent();
    assert(!code.includes("<script>") && !code.includes("pwned"), "snippet: " + code);
  }
  await page.locator("[role=tab]").first().click();
  assert((await page.evaluate(() => window.__pwned)) === undefined, "a script ran");
  await page.waitForTimeout(300);
  assert((await page.evaluate(() => window.__pwned)) === undefined, "a script ran");
});

await check("another room's deletion does not end this room's page", async () => {
  const other = await json(`${HUB}/rooms`, { method: "POST", body: JSON.stringify({ name: "Short-lived" }) });
  await json(`${HUB}/rooms/${other.room.code}`, { method: "DELETE", headers: { Authorization: `Bearer ${other.hostToken}` } });
  await page.waitForTimeout(500);
  assert((await page.locator("#live").textContent()) === "Live", "live: " + (await page.locator("#live").textContent()));
  assert(await page.locator("#banner").isHidden(), "banner: " + (await page.locator("#banner").textContent()));
});

await check("every control has a label", async () => {
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll("input, select, textarea, button")]
    .filter((c) => !c.closest("[hidden]") && c.getAttribute("aria-hidden") !== "true")
    .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute("aria-label") && !(c.textContent || "").trim())
    .map((c) => c.id || c.outerHTML.slice(0, 60)));
  assert(unlabelled.length === 0, "unlabelled: " + unlabelled.join(", "));
});

await page.screenshot({ path: join(OUT, "room-desktop.png"), fullPage: true });

await check("the page reconnects after the hub restarts", async () => {
  expectNetworkErrors = true;
  await stop(hub);
  await until("the page to notice", async () => (await page.locator("#live").textContent()) !== "Live", 20000);
  hub = startHub();
  await until("the hub", async () => (await fetch(`${HUB}/health`)).ok);
  // The room is in the state file; the agent re-joins at its next health check.
  await until("Live again", async () => (await page.locator("#live").textContent()) === "Live", 20000);
  await card("alice").waitFor({ timeout: 10000 });
  await until("alice online", async () => (await card("alice").getAttribute("data-status")) === "online", 10000);
  // mallory was registered by hand, not by an agent: gone with the restart.
  await until("mallory gone", async () => (await card("mallory").count()) === 0, 5000);
  expectNetworkErrors = false;
  // And the live updates still flow.
  const r = fetch(`${roomUrl}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: "*", stream: true, messages: [{ role: "user", content: "again" }] }) }).then((x) => x.text());
  await until("busy after the restart", async () => (await card("alice").getAttribute("data-status")) === "busy", 5000);
  await r;
  await until("online", async () => (await card("alice").getAttribute("data-status")) === "online", 5000);
});

await check("a phone-width page, dark", async () => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, colorScheme: "dark" });
  const p = await phone.newPage();
  p.on("pageerror", (e) => problems.push("phone uncaught: " + e.message));
  await p.goto(roomUrl);
  await p.locator('#cards article[data-id="alice"]').waitFor({ timeout: 5000 });
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert(overflow <= 0, `wider than the screen by ${overflow} px`);
  await p.screenshot({ path: join(OUT, "room-phone.png"), fullPage: true });
  await phone.close();
});

await check("a protected room asks for its password once, and keeps it out of URLs and storage", async () => {
  // Not only ASCII: the page sends the password's UTF-8 bytes, as the hub hashed them.
  const PASSWORD = "browser sécret 密码 1";
  const { room: locked } = await json(`${HUB}/rooms`, { method: "POST", body: JSON.stringify({ name: "Locked", password: PASSWORD }) });
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const p = await ctx.newPage();
  const requested = [];
  p.on("request", (r) => requested.push(r.url()));
  p.on("pageerror", (e) => problems.push("locked uncaught: " + e.message));
  await p.goto(`${HUB}/rooms/${locked.code}`);
  await p.locator("#login").waitFor({ state: "visible", timeout: 5000 });
  await p.fill("#login-password", "wrong");
  await p.click("#login-form button[type=submit]");
  await until("the refusal", async () => /Wrong password/.test(await p.locator("#login-error").textContent()), 5000);
  await p.fill("#login-password", PASSWORD);
  await p.click("#login-form button[type=submit]");
  await until("Live", async () => (await p.locator("#live").textContent()) === "Live", 10000);
  assert(!p.url().includes("password"), "the page's URL");
  const stored = await p.evaluate(() => JSON.stringify([localStorage, sessionStorage, document.cookie]));
  assert(!stored.includes("browser s"), "storage: " + stored);
  const leaks = requested.filter((u) => /browser|s%C3%A9cret/.test(u) && !u.includes("/events?"));
  assert(leaks.length === 0, "the password in " + leaks.join(", "));
  await ctx.close();
});

await check("an unknown room's page says so", async () => {
  const p = await context.newPage();
  const resp = await p.goto(`${HUB}/rooms/ZZZZZZ`);
  assert(resp.status() === 404, "status " + resp.status());
  await until("the message", async () => /no room ZZZZZZ/.test(await p.locator("#banner").textContent()), 5000);
  await p.close();
});

await check("the home page lists the rooms and creates one", async () => {
  const p = await context.newPage();
  p.on("pageerror", (e) => problems.push("home uncaught: " + e.message));
  await p.goto(`${HUB}/`);
  await p.locator(`#rooms-body a[href="/rooms/${CODE}"]`).waitFor({ timeout: 5000 });
  await p.fill("#create-name", "Made in the browser");
  await p.click("#create button[type=submit]");
  await p.locator("#created").waitFor({ state: "visible", timeout: 5000 });
  const token = await p.locator("#created-token").textContent();
  assert(token.length >= 16, "host token " + token);
  await p.screenshot({ path: join(OUT, "home-desktop.png"), fullPage: true });
  await p.click("#created-link");
  await until("its page", async () => (await p.locator("#live").textContent()) === "Live", 5000);
  await p.close();
});

await check("no policy violation or uncaught error", async () => {
  assert(problems.length === 0, problems.join(" | "));
});

await browser.close();
await stop(agent);
for (const c of children) await stop(c);
if (weight) writeFileSync(join(OUT, "page-weight.json"), JSON.stringify(weight, null, 2));
console.log(`${passes} passed, ${failures} failed`);
process.exit(failures ? 1 : 0);
