// The hub's home page: the rooms (GET /rooms, refreshed while the page is visible), a form that
// creates one (POST /rooms), and how to join. Room names are chosen by whoever created them:
// shown as text only.
"use strict";

(() => {
  const { el, api, clear, copyButton } = G;
  const $ = (id) => document.getElementById(id);
  const origin = location.origin;

  $("join-cmd").textContent = `gambiarra join --hub ${origin} --code CODE --model llama3`;
  $("base-example").textContent = `${origin}/rooms/CODE/v1`;

  async function loadRooms() {
    try {
      const { rooms } = await api("/rooms");
      rooms.sort((a, b) => b.createdAt - a.createdAt);
      const body = $("rooms-body");
      clear(body);
      for (const r of rooms) {
        const link = el("a", { href: "/rooms/" + encodeURIComponent(r.code), text: r.name });
        body.append(el("tr", {},
          el("td", {}, link),
          el("td", { class: "mono", text: r.code }),
          el("td", { text: r.participantCount }),
          el("td", { text: r.passwordProtected ? "Password" : "Open" })));
      }
      $("rooms").hidden = rooms.length === 0;
      $("no-rooms").hidden = rooms.length > 0;
      $("rooms-error").textContent = "";
    } catch (e) {
      $("rooms-error").textContent = "Could not list the rooms: " + e.message;
    }
  }

  $("create").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("create-error").textContent = "";
    const body = { name: $("create-name").value.trim() };
    if ($("create-password").value) body.password = $("create-password").value;
    if ($("create-routing").value) body.routing = $("create-routing").value;
    const admin = $("create-admin").value;
    try {
      const answer = await api("/rooms", { method: "POST", body, headers: admin ? { Authorization: G.bearer(admin) } : {} });
      $("created-name").textContent = answer.room.name;
      $("created-code").textContent = answer.room.code;
      $("created-token").textContent = answer.hostToken;
      const copySlot = $("created-copy");
      clear(copySlot);
      copySlot.append(copyButton(() => answer.hostToken, "Copy the host token"));
      $("created-link").href = "/rooms/" + encodeURIComponent(answer.room.code);
      $("created").hidden = false;
      $("create-password").value = "";
      $("created-link").focus();
      loadRooms();
    } catch (err) {
      $("create-error").textContent = err.status === 401 ? "This hub needs its admin token to create rooms." : err.message;
    }
  });

  loadRooms();
  setInterval(() => { if (!document.hidden) loadRooms(); }, 5000);
})();
