// The room page: participants as live cards, the activity feed, the queue, how to use the room
// (base URL, snippets, QR code), and a chat box. Everything comes from the hub's API:
//   GET /rooms/CODE                 the room's public summary and links (no password needed)
//   GET /rooms/CODE/participants    who is in it, what runs, what waits (+ the last event id)
//   GET /rooms/CODE/events          the live stream (EventSource; Last-Event-ID on reconnect)
//   POST /rooms/CODE/v1/chat/completions   the chat box, streamed
"use strict";

(() => {
  const { el, api, clear, fmtTime, fmtMs, fmtAgo, sparkline, copyButton } = G;
  const $ = (id) => document.getElementById(id);

  const code = decodeURIComponent(location.pathname.split("/")[2] || "");
  const base = "/rooms/" + encodeURIComponent(code);
  /** Kept in this tab's memory only (never storage, never the page's URL). */
  let password = "";
  let room = null;
  let links = null;

  /** id → participant info (as listed), with the page's own counters. */
  const people = new Map();
  /** id → { tps: [..], last: metrics } from llm:complete events. */
  const stats = new Map();
  let queued = 0;
  /** Events up to this id are already in the last snapshot: replayed ones only feed history. */
  let snapshotId = -1;
  /** Events up to this id were replayed on the page's first connection (history). */
  let historyUpTo = -1;
  /** Events that arrived while a snapshot was on its way. */
  let pending = null;
  let renderQueued = false;
  let lastEventId = "";
  let source = null;
  let retryDelay = 1000;
  let retryTimer = null;
  let reconcileTimer = null;
  let everConnected = false;
  const SPARK_POINTS = 30;
  /** Models shown on a card, models and participants offered in the chat's picker. */
  const MAX_CARD_MODELS = 12;
  const MAX_OPTIONS = 200;
  const FEED_MAX = 60;

  // ---------------------------------------------------------------- start
  async function start() {
    if (!code) return fatal("No room code in this address.");
    // The room and its participants at once; the second is refused (401) in a protected room
    // until the password is known.
    const listing = api(base + "/participants");
    listing.catch(() => {});
    try {
      const info = await api(base);
      room = info.room;
      links = info.links;
    } catch (e) {
      if (e.status === 404 || e.status === 410) return fatal("There is no room " + code + " on this hub (it may have been deleted, or the hub restarted without --state).", true);
      return fatal("Could not load the room: " + e.message, true);
    }
    document.title = room.name + " · Gambiarra";
    $("room-name").textContent = room.name + " ";
    $("room-name").append(el("span", { class: "muted small mono", text: room.code }));
    renderUse();
    if (room.passwordProtected) {
      $("key-note").textContent = " (here: the room's password)";
      await askPassword();
      await snapshot();
    } else {
      await snapshot(listing);
    }
    historyUpTo = snapshotId;
    connect();
  }

  function fatal(message, retry) {
    const b = $("banner");
    b.textContent = message;
    b.hidden = false;
    setLive("offline", "Not connected");
    if (retry) setTimeout(() => location.reload(), 15000);
  }

  function askPassword() {
    return new Promise((resolve) => {
      const dialog = $("login");
      const form = $("login-form");
      const input = $("login-password");
      const error = $("login-error");
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        error.textContent = "";
        try {
          await api(base + "/participants", { password: input.value });
          password = input.value;
          input.value = "";
          dialog.close();
          resolve();
        } catch (err) {
          error.textContent = err.status === 401 ? "Wrong password." : err.message;
          input.select();
        }
      });
      dialog.addEventListener("cancel", (e) => e.preventDefault());
      dialog.showModal();
      input.focus();
    });
  }

  // ---------------------------------------------------------------- state
  /** Who is in the room now; events after its `eventId` are applied on top of it. Events that
   *  arrive while it is on its way wait in `pending`, and those it does not include are applied
   *  once it is here. */
  async function snapshot(started) {
    const mine = [];
    pending = mine;
    let data;
    try {
      data = await (started || api(base + "/participants", { password }));
    } finally {
      if (pending === mine) pending = null;
    }
    // An older answer overtaken by a newer one changes nothing.
    if (data.eventId < snapshotId) return;
    people.clear();
    for (const p of data.participants) people.set(p.id, p);
    queued = data.queued || 0;
    snapshotId = data.eventId;
    for (const [id, kind, d] of mine) if (id > snapshotId) apply(kind, d);
    renderPeople();
  }

  /** A second look at the participants soon after requests end, in case an event and the
   *  snapshot crossed (counts are kept from events between snapshots). */
  function reconcileSoon() {
    if (reconcileTimer) return;
    reconcileTimer = setTimeout(async () => {
      reconcileTimer = null;
      try { await snapshot(); } catch (_) { /* the stream's reconnect will redo it */ }
    }, 1500);
  }

  function connect() {
    if (source) source.close();
    const q = new URLSearchParams();
    // A page's first connection replays what the room still keeps (sparklines, feed); a new
    // connection after an error resumes after the last event seen.
    if (lastEventId) q.set("lastEventId", lastEventId); else q.set("history", "1");
    if (password) q.set("password", password);
    source = new EventSource(base + "/events?" + q.toString());
    setLive("offline", everConnected ? "Reconnecting…" : "Connecting…");
    source.addEventListener("connected", onConnected);
    source.addEventListener("resync", () => snapshot().catch(() => {}));
    for (const kind of ["participant:joined", "participant:updated", "participant:left", "participant:offline",
      "participant:online", "llm:request", "llm:complete", "llm:error", "llm:queued", "llm:dequeued", "room:deleted"]) {
      source.addEventListener(kind, (e) => onEvent(kind, e));
    }
    source.onerror = () => {
      setLive("offline", "Reconnecting…");
      // The browser retries a dropped stream by itself (sending Last-Event-ID); a refused one
      // (the hub answered an error, e.g. while it restarts) it gives up on: retry here.
      if (source.readyState === EventSource.CLOSED) scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (retryTimer) return;
    retryTimer = setTimeout(async () => {
      retryTimer = null;
      retryDelay = Math.min(retryDelay * 2, 15000);
      try {
        await api(base);
      } catch (e) {
        if (e.status === 404 || e.status === 410) {
          $("banner").textContent = "The room " + code + " is gone from the hub (deleted, or the hub restarted without --state).";
          $("banner").hidden = false;
        }
        return scheduleReconnect();
      }
      connect();
    }, retryDelay);
  }

  async function onConnected() {
    retryDelay = 1000;
    everConnected = true;
    setLive("online", "Live");
    $("banner").hidden = true;
    // Every (re)connection starts from a fresh picture: the hub may have restarted, and
    // participants joined or left while we were away.
    try { await snapshot(); } catch (_) { /* next event or reconnect */ }
  }

  /** The connection's state; while it is down the cards are marked as possibly out of date. */
  function setLive(kind, text) {
    const live = $("live");
    live.className = "pill " + kind;
    live.textContent = text;
    $("cards").classList.toggle("stale", kind !== "online");
    $("cards").setAttribute("aria-description", kind === "online" ? "" : "Not connected: this may be out of date");
  }

  function onEvent(kind, e) {
    if (e.lastEventId) lastEventId = e.lastEventId;
    let data;
    try { data = JSON.parse(e.data); } catch (_) { return; }
    const id = Number(e.lastEventId);
    record(kind, data, id <= historyUpTo);
    if (pending) pending.push([id, kind, data]);
    else if (!(id <= snapshotId)) apply(kind, data);
    // `room:created` and `room:deleted` go to every room's stream: only this room's deletion
    // ends this page.
    if (kind === "room:deleted" && data.code === room.code) {
      $("banner").textContent = "This room was deleted by its host.";
      $("banner").hidden = false;
      if (source) source.close();
      setLive("offline", "Room deleted");
      people.clear();
      queued = 0;
    }
    renderSoon();
  }

  /** Render at the next frame: a burst of events (a replayed history) renders once. */
  function renderSoon() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      renderPeople();
    });
  }

  /** What an event changes in the picture of the room (only events newer than the snapshot). */
  function apply(kind, data) {
    const p = data.participantId ? people.get(data.participantId) : null;
    switch (kind) {
      case "participant:joined":
      case "participant:updated":
        people.set(data.id, data);
        break;
      case "participant:left":
        people.delete(data.participantId);
        break;
      case "participant:offline":
      case "participant:online":
        if (p) p.status = kind === "participant:offline" ? "offline" : "online";
        break;
      case "llm:request":
        if (p) p.inFlight = (p.inFlight || 0) + 1;
        break;
      case "llm:complete":
      case "llm:error":
        if (p) p.inFlight = Math.max(0, (p.inFlight || 0) - 1);
        reconcileSoon();
        break;
      case "llm:queued":
      case "llm:dequeued":
        queued = data.depth;
        break;
    }
  }

  /** The feed line and the measurements an event carries (replayed ones too: the room's
   *  recent past). */
  function record(kind, data, replayed) {
    const p = data.participantId ? people.get(data.participantId) : null;
    switch (kind) {
      case "participant:joined":
        return feed([who(data), " joined with ", data.model], replayed);
      case "participant:updated":
        return feed([who(data), " updated"], replayed);
      case "participant:left":
        return feed([who(p, data.participantId), " left"], replayed);
      case "participant:offline":
        return feed([who(p, data.participantId), " went offline"], replayed);
      case "participant:online":
        return feed([who(p, data.participantId), " is back online"], replayed);
      case "llm:request":
        return feed(["→ ", who(p, data.participantId), " runs ", data.servedModel || data.model], replayed);
      case "llm:complete": {
        const m = data.metrics;
        const s = stats.get(data.participantId) || { tps: [], last: null };
        s.last = m;
        s.tps.push(m.tokensPerSecond);
        if (s.tps.length > SPARK_POINTS) s.tps.shift();
        stats.set(data.participantId, s);
        return feed(["✓ ", who(p, data.participantId), ": " + m.tokens + " tokens, " + m.tokensPerSecond.toFixed(1) + " tok/s, first token " + fmtMs(m.latencyFirstTokenMs)], replayed);
      }
      case "llm:error":
        return feed(["✗ ", who(p, data.participantId), ": " + data.error], replayed);
      case "llm:queued":
        return feed(["Queued: a request for " + data.model + " (#" + data.position + ", " + data.depth + " waiting)"], replayed);
      case "llm:dequeued":
        if (data.outcome !== "served") feed(["Queue: a request for " + data.model + " left unserved (" + data.outcome + ")"], replayed);
        return;
      case "room:deleted":
        if (data.code === room.code) feed(["The room was deleted"], replayed);
        return;
    }
  }

  /** A participant's display name: the nickname as text, the id when it is unknown. */
  function who(p, id) {
    return el("strong", { text: p ? p.nickname : (id || "someone") });
  }

  /** A feed line; events replayed from before the page opened carry no time (the hub's events
   *  have none), so they say "earlier". */
  function feed(parts, replayed) {
    const list = $("feed");
    const when = replayed ? el("span", { class: "when muted", text: "earlier" }) : el("time", { text: fmtTime(Date.now()) });
    const item = el("li", { class: replayed ? "replayed" : null }, when, el("span", { class: "what" }, ...parts));
    list.prepend(item);
    while (list.children.length > FEED_MAX) list.lastChild.remove();
    $("no-feed").hidden = true;
  }

  // ---------------------------------------------------------------- render
  function status(p) {
    if (p.status === "offline") return "offline";
    return (p.inFlight || 0) > 0 ? "busy" : "online";
  }

  function renderPeople() {
    const cards = $("cards");
    const list = [...people.values()];
    const counts = { online: 0, busy: 0, offline: 0 };
    for (const p of list) counts[status(p)]++;
    // A live region: rewritten only when what it says changed, so a screen reader does not
    // announce it at every event.
    const summary = $("summary");
    const said = [list.length, counts.busy, counts.offline, queued].join();
    if (summary.dataset.said !== said) {
      summary.dataset.said = said;
      clear(summary);
      summary.append(
        el("span", {}, el("b", { text: list.length }), list.length === 1 ? " participant" : " participants"),
        el("span", {}, el("b", { text: counts.busy }), " busy"),
        el("span", {}, el("b", { text: counts.offline }), " offline"),
        el("span", { id: "queue" }, el("b", { text: queued }), queued === 1 ? " request waiting" : " requests waiting"),
      );
    }
    $("no-cards").hidden = list.length > 0;
    // Rebuild in place: cards keep their order (join order), the focus stays where it was.
    const existing = new Map([...cards.children].map((c) => [c.dataset.id, c]));
    const keep = new Set();
    let prev = null;
    for (const p of list) {
      keep.add(p.id);
      const old = existing.get(p.id);
      // A card is rebuilt only when something it shows changed (1,000 participants and a
      // burst of events stay cheap). "Seen … ago" changes with time: by the minute.
      const s = stats.get(p.id);
      const sig = JSON.stringify([p, s && s.tps, Math.floor((Date.now() - (p.lastSeen || 0)) / 60000)]);
      let card = old;
      if (!old || old.dataset.sig !== sig) {
        card = renderCard(p);
        card.dataset.sig = sig;
        if (old) old.replaceWith(card);
      }
      const here = prev ? prev.nextSibling : cards.firstChild;
      if (here !== card) {
        if (prev) prev.after(card); else cards.prepend(card);
      }
      prev = card;
    }
    for (const [id, c] of existing) if (!keep.has(id)) c.remove();
    updateModels();
  }

  function renderCard(p) {
    const st = status(p);
    const s = stats.get(p.id);
    const slots = p.slots ? String(p.slots) : "hub default";
    const label = { online: "Online", busy: "Busy", offline: "Offline" }[st];
    const all = p.models && p.models.length ? p.models : [{ name: p.model }];
    const models = all.slice(0, MAX_CARD_MODELS).map((m) =>
      el("li", { class: m.loaded === false ? "unloaded" : null, title: m.loaded === false ? "not loaded (the first request loads it)" : null, text: m.name }));
    if (all.length > MAX_CARD_MODELS) models.push(el("li", { class: "more", text: "+" + (all.length - MAX_CARD_MODELS) + " more" }));
    const spec = p.specs || {};
    const rows = [
      ["Running", (p.inFlight || 0) + " of " + slots + " slots"],
      ["Last speed", s && s.last ? s.last.tokensPerSecond.toFixed(1) + " tok/s" : "–"],
      ["First token", s && s.last ? fmtMs(s.last.latencyFirstTokenMs) : "–"],
    ];
    if (spec.gpu) rows.push(["GPU", spec.gpu + (spec.vram ? " · " + spec.vram + " GB" : "")]);
    if (spec.cpu) rows.push(["CPU", spec.cpu]);
    if (spec.ram) rows.push(["RAM", spec.ram + " GB"]);
    if (p.lastSeen) rows.push(["Seen", fmtAgo(p.lastSeen)]);
    const card = el("article", { class: "card", "data-id": p.id, "data-status": st, "aria-label": p.nickname + ", " + label },
      el("div", { class: "head" },
        el("h3", { text: p.nickname }),
        el("span", { class: "pill " + st, text: label })),
      el("div", { class: "small muted mono", text: p.id }),
      el("ul", { class: "models", "aria-label": "Models" }, models),
      el("dl", {}, rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
      sparkline(s ? s.tps : [], s && s.tps.length ? "Tokens per second, last " + s.tps.length + " requests: " + s.tps.map((v) => v.toFixed(1)).join(", ") : "No requests yet"),
    );
    return card;
  }

  // ---------------------------------------------------------------- use this room
  const snippets = [
    ["curl", (u, m, k) => `curl ${u}/chat/completions \\\n  -H "Content-Type: application/json" \\\n  -H "Authorization: Bearer ${k}" \\\n  -d '{"model": "${m}", "stream": true,\n       "messages": [{"role": "user", "content": "Hello!"}]}'`],
    ["OpenAI Python", (u, m, k) => `from openai import OpenAI\n\nclient = OpenAI(base_url="${u}", api_key="${k}")\nstream = client.chat.completions.create(\n    model="${m}",\n    messages=[{"role": "user", "content": "Hello!"}],\n    stream=True,\n)\nfor chunk in stream:\n    print(chunk.choices[0].delta.content or "", end="")`],
    ["Vercel AI SDK", (u, m, k) => `import { createOpenAICompatible } from "@ai-sdk/openai-compatible";\nimport { streamText } from "ai";\n\nconst room = createOpenAICompatible({\n  name: "gambiarra",\n  baseURL: "${u}",\n  apiKey: "${k}",\n});\nconst { textStream } = streamText({ model: room("${m}"), prompt: "Hello!" });\nfor await (const part of textStream) process.stdout.write(part);`],
    ["Anthropic / Claude Code", (u, m, k) => `export ANTHROPIC_BASE_URL=${u.replace(/\/v1$/, "")}\nexport ANTHROPIC_API_KEY=${k}\n# then: claude --model ${m}  (or the anthropic SDKs)`],
    ["Ollama", (u, m, k) => `export OLLAMA_HOST=${u.replace(/\/v1$/, "")}\nollama run ${m === "*" ? "MODEL" : m}` + (room && room.passwordProtected ? `\n# protected room: the ollama libraries send headers={"Authorization": "Bearer ${k}"}` : "")],
  ];
  let snippetIndex = 0;
  const SAFE_MODEL = /^[A-Za-z0-9][A-Za-z0-9._:\/@+-]{0,63}$/;

  function renderUse() {
    $("base-url").textContent = links.openai;
    $("base-copy").append(copyButton(() => links.openai, "Copy the base URL"));
    $("page-url").textContent = links.page;
    if (/^https?:\/\/(localhost|127\.|\[::1\])/.test(links.page)) {
      $("page-url-note").textContent = "This hub listens on this machine only: other machines cannot open this address.";
    }
    const img = $("qr");
    img.src = base + "/qr.svg";
    img.alt = "QR code of " + links.page;
    $("snippet-copy").append(copyButton(() => $("snippet").textContent, "Copy the snippet"));
    G.tabs($("snippets"), snippets.map((s) => s[0]), (i, tabId) => {
      snippetIndex = i;
      $("snippet").setAttribute("aria-labelledby", tabId);
      renderSnippet();
    });
    const hub = links.page.replace(/\/rooms\/[^/]*$/, "");
    const join = `gambiarra join --hub ${hub} --code ${room.code} --model llama3` + (room.passwordProtected ? " --password '…'" : "");
    $("join-cmd").textContent = join;
    $("join-copy").append(copyButton(() => join, "Copy the join command"));
  }

  function renderSnippet() {
    // A participant's model name goes into code people paste into a shell: only a plain one
    // (letters, digits, . _ : / @ + -), else "*". Nothing a participant chose is quoted into
    // the snippets otherwise.
    const model = firstModel();
    const key = room.passwordProtected ? "ROOM_PASSWORD" : "anything";
    $("snippet").textContent = snippets[snippetIndex][1](links.openai, model, key);
  }

  function firstModel() {
    for (const p of people.values()) {
      if (p.status !== "offline" && typeof p.model === "string" && SAFE_MODEL.test(p.model)) return p.model;
    }
    return "*";
  }

  /** The chat box's choices: anyone, each model, each participant. */
  function updateModels() {
    const select = $("chat-model");
    const current = select.value;
    const models = new Set();
    const online = [...people.values()].filter((p) => p.status !== "offline");
    for (const p of online) for (const m of (p.models && p.models.length ? p.models : [{ name: p.model }])) models.add(m.name);
    const options = [["*", "Anyone (*)"]];
    for (const m of [...models].sort().slice(0, MAX_OPTIONS)) options.push(["model:" + m, "Model: " + m]);
    // The id too: nicknames are not unique, and one participant could take another's.
    for (const p of online.slice(0, MAX_OPTIONS)) options.push([p.id, "Participant: " + p.nickname + " (" + p.id + ")"]);
    const key = options.map((o) => o[0] + "\u0000" + o[1]).join("\u0001");
    if (select.dataset.key !== key) {
      select.dataset.key = key;
      clear(select);
      for (const [value, text] of options) select.append(el("option", { value, text }));
      if (options.some((o) => o[0] === current)) select.value = current;
    }
    renderSnippet();
  }

  // ---------------------------------------------------------------- chat
  const history = [];
  let controller = null;

  function bubble(role, text, whoText) {
    const b = el("div", { class: "msg " + role }, el("span", { class: "who", text: whoText }));
    const body = document.createTextNode(text);
    b.append(body);
    $("transcript").append(b);
    $("transcript").scrollTop = $("transcript").scrollHeight;
    return body;
  }

  async function send(e) {
    e.preventDefault();
    const input = $("chat-input");
    const text = input.value.trim();
    if (!text || controller) return;
    input.value = "";
    history.push({ role: "user", content: text });
    bubble("user", text, "You");
    const model = $("chat-model").value || "*";
    const answer = bubble("assistant", "", "Answer (" + model + ")");
    const container = answer.parentNode;
    container.setAttribute("aria-busy", "true");
    controller = new AbortController();
    $("chat-send").disabled = true;
    $("chat-stop").disabled = false;
    let full = "";
    try {
      const headers = { "Content-Type": "application/json", Accept: "text/event-stream" };
      if (password) headers.Authorization = G.bearer(password);
      const resp = await fetch(base + "/v1/chat/completions", {
        method: "POST", headers, signal: controller.signal,
        body: JSON.stringify({ model, messages: history, stream: true }),
      });
      if (!resp.ok) {
        let msg = resp.status + " " + resp.statusText;
        try { msg = G.errorText(await resp.json()) || msg; } catch (_) { /* keep the status */ }
        throw new Error(msg);
      }
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, nl).replace(/\r$/, "");
          buffer = buffer.slice(nl + 1);
          if (!line.startsWith("data:")) continue;
          const payload = line.slice(5).trim();
          if (payload === "[DONE]") continue;
          let chunk;
          try { chunk = JSON.parse(payload); } catch (_) { continue; }
          if (chunk.error) throw new Error(G.errorText(chunk));
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && typeof delta.content === "string") {
            full += delta.content;
            answer.textContent = full;
            $("transcript").scrollTop = $("transcript").scrollHeight;
          }
          if (chunk.model) container.firstChild.textContent = "Answer (" + chunk.model + ")";
        }
      }
      history.push({ role: "assistant", content: full });
    } catch (err) {
      if (err.name === "AbortError") {
        history.push({ role: "assistant", content: full });
        answer.textContent = full + " [stopped]";
      } else {
        history.pop();
        container.className = "msg error";
        answer.textContent = "Error: " + err.message;
      }
    } finally {
      container.removeAttribute("aria-busy");
      controller = null;
      $("chat-send").disabled = false;
      $("chat-stop").disabled = true;
      input.focus();
    }
  }

  $("chat").addEventListener("submit", send);
  $("chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("chat").requestSubmit();
  });
  $("chat-stop").addEventListener("click", () => controller && controller.abort());
  $("chat-clear").addEventListener("click", () => {
    if (controller) controller.abort();
    history.length = 0;
    clear($("transcript"));
  });
  // "Seen … ago" goes stale: refresh the cards now and then.
  setInterval(() => { if (people.size) renderPeople(); }, 15000);

  start().catch((e) => fatal("Could not start: " + e.message, true));
})();
