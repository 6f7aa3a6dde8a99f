// Shared by the home page and the room page. Every string that came from the network is put in
// the page as text (textContent, attribute values): never as HTML. Nicknames, model names and
// specs are chosen by participants, and some participants are hostile.
"use strict";

const G = (() => {
  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attrs, ...children) {
    const svg = tag === "svg" || tag === "polyline" || tag === "line";
    const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  /** `fetch` for the hub's JSON API: the room password (if any) as the bearer token. A
   *  non-2xx answer throws an Error with the hub's message and `status`. */
  async function api(path, { method = "GET", body, password, signal, headers } = {}) {
    const h = { Accept: "application/json", ...(headers || {}) };
    if (body !== undefined) h["Content-Type"] = "application/json";
    if (password) h.Authorization = bearer(password);
    const resp = await fetch(path, {
      method, headers: h, signal, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!resp.ok) {
      const e = new Error(errorText(data) || resp.status + " " + resp.statusText);
      e.status = resp.status;
      e.retryAfter = Number(resp.headers.get("Retry-After")) || 0;
      throw e;
    }
    return data;
  }

  /** `Bearer <password>` as the hub reads it: the password's UTF-8 bytes. Header values are
   *  byte strings (a browser sends each character as one byte, Latin-1), so a password with
   *  "é" or "密" is spelt as its UTF-8 bytes, one character each. */
  function bearer(password) {
    let bytes = "";
    for (const b of new TextEncoder().encode(password)) bytes += String.fromCharCode(b);
    return "Bearer " + bytes;
  }

  /** The message of any of the error shapes the hub answers in. */
  function errorText(data) {
    if (!data) return "";
    if (typeof data.error === "string") return data.error;
    if (data.error && typeof data.error.message === "string") return data.error.message;
    if (typeof data.message === "string") return data.message;
    return "";
  }

  /** Copy `text`; on a plain-http LAN page (no Clipboard API) through a hidden textarea. */
  async function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); return true; } catch (_) { /* below */ }
    }
    const area = el("textarea", { "aria-hidden": "true", class: "visually-hidden", readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
    area.remove();
    return ok;
  }

  /** A "Copy" button for what `get()` returns; says "Copied" for a moment. */
  function copyButton(get, label) {
    const b = el("button", { type: "button", "aria-label": label || "Copy" }, "Copy");
    b.addEventListener("click", async () => {
      const ok = await copy(get());
      b.textContent = ok ? "Copied" : "Select and copy";
      setTimeout(() => { b.textContent = "Copy"; }, 1500);
    });
    return b;
  }

  function clear(node) { while (node.firstChild) node.firstChild.remove(); }

  function fmtTime(ms) {
    const d = new Date(ms);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function fmtMs(ms) {
    if (ms === undefined || ms === null) return "–";
    return ms >= 1000 ? (ms / 1000).toFixed(ms >= 10000 ? 0 : 1) + " s" : Math.round(ms) + " ms";
  }

  function fmtAgo(ms) {
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return "under a minute ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  /** A sparkline of `values` (newest last) as an SVG, with an accessible summary. */
  function sparkline(values, label) {
    const w = 100, h = 30;
    const svg = el("svg", { class: "spark", viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", role: "img", "aria-label": label });
    svg.append(el("line", { x1: 0, y1: h - 0.5, x2: w, y2: h - 0.5 }));
    if (values.length > 0) {
      const max = Math.max(...values, 1);
      const step = values.length > 1 ? w / (values.length - 1) : 0;
      const pts = values.map((v, i) => {
        const x = values.length > 1 ? i * step : w / 2;
        const y = h - 1 - (v / max) * (h - 4);
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      if (values.length === 1) pts.unshift("0," + pts[0].split(",")[1]);
      svg.append(el("polyline", { points: pts.join(" ") }));
    }
    return svg;
  }

  /** Accessible tabs: a tablist of buttons over one panel; arrow keys move between them. */
  function tabs(container, items, onSelect) {
    const list = el("div", { role: "tablist", "aria-label": container.getAttribute("data-label") || "Options" });
    const buttons = items.map((item, i) => el("button", {
      type: "button", role: "tab", id: container.id + "-tab-" + i,
      "aria-selected": i === 0 ? "true" : "false", tabindex: i === 0 ? "0" : "-1",
    }, item));
    const select = (i) => {
      buttons.forEach((b, j) => {
        b.setAttribute("aria-selected", j === i ? "true" : "false");
        b.tabIndex = j === i ? 0 : -1;
      });
      onSelect(i, buttons[i].id);
    };
    buttons.forEach((b, i) => {
      b.addEventListener("click", () => select(i));
      b.addEventListener("keydown", (e) => {
        const d = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
        if (!d) return;
        e.preventDefault();
        const n = (i + d + buttons.length) % buttons.length;
        buttons[n].focus();
        select(n);
      });
    });
    list.append(...buttons);
    container.prepend(list);
    select(0);
  }

  return { el, api, bearer, errorText, copy, copyButton, clear, fmtTime, fmtMs, fmtAgo, sparkline, tabs };
})();
