// chat.js — the browser chat UI at `/`.
//
// All protocol work (tokens, reconnecting, resuming, the outbound queue, de-duplicating)
// lives in shared/client.js; this module renders it. The sign-in view, the connection
// indicator, the wording of errors and the toasts are shared with the admin console
// (shared/signin.js, status.js, errors.js, toasts.js). User text only ever reaches the
// page as text (shared/dom.js), never as HTML.

import { Connection, NetworkError, Session, State, bodyLength } from "./shared/client.js";
import { byId, clear, h, hueClass, initials, linkify, setText, showText, timeElement } from "./shared/dom.js";
import { couldNot, frameErrorWords, requestErrorWords, sendDelayWords, waitWords } from "./shared/errors.js";
import { SignIn } from "./shared/signin.js";
import { ConnectionStatus } from "./shared/status.js";
import { Toasts } from "./shared/toasts.js";

const HISTORY_PAGE = 50; // messages per history request
const TYPING_EVERY = 3000; // ms between our own `typing` frames
const TYPING_SHOW = 5000; // ms a "… is typing" stays without a new frame
const GROUP_WINDOW = 5 * 60 * 1000; // consecutive messages by one author within this are grouped
const ROOMS_POLL = 30_000; // ms between room list refreshes
const STICK_SLACK = 48; // px from the bottom that still counts as "at the bottom"

const session = new Session();
let conn = null;
let me = null; // {id, name, role}
let rooms = new Map(); // name -> RoomView
let current = null; // RoomView
let roomsTimer = null;
let lastTypingSent = 0;

const $ = {
  chatView: byId("chat-view"),
  toggleRooms: byId("toggle-rooms"),
  meAvatar: byId("me-avatar"),
  meName: byId("me-name"),
  signOut: byId("sign-out"),
  sidebar: byId("sidebar"),
  roomList: byId("room-list"),
  roomsEmpty: byId("rooms-empty"),
  createRoom: byId("create-room"),
  newRoomName: byId("new-room-name"),
  newRoomPrivate: byId("new-room-private"),
  createRoomError: byId("create-room-error"),
  createRoomSubmit: byId("create-room-submit"),
  roomTitle: byId("room-title"),
  roomBadge: byId("room-badge"),
  roomMeta: byId("room-meta"),
  togglePeople: byId("toggle-people"),
  peopleCount: byId("people-count"),
  scroller: byId("scroller"),
  roomEmpty: byId("room-empty"),
  jump: byId("jump"),
  typing: byId("typing"),
  notices: byId("notices"),
  composer: byId("composer"),
  input: byId("message-input"),
  send: byId("send"),
  charCount: byId("char-count"),
  people: byId("people"),
  closePeople: byId("close-people"),
  presenceList: byId("presence-list"),
  addMember: byId("add-member"),
  memberName: byId("member-name"),
  addMemberStatus: byId("add-member-status"),
  addMemberSubmit: byId("add-member-submit"),
  backdrop: byId("backdrop"),
};

const signin = new SignIn({
  session,
  root: byId("signin-view"),
  splash: byId("splash"),
  brand: { name: "Chat" },
  heading: "Sign in",
  lead: "Welcome back. Sign in to pick up where you left off.",
  docTitle: "Sign in · Chat",
  register: { lead: "Pick a username and a password to start chatting.", docTitle: "Create an account · Chat" },
  onEnter: enterChat,
  onLeave: leaveChat,
});
const status = new ConnectionStatus(byId("conn"), byId("banner"), { queued: () => conn?.pending().length ?? 0 });
const toasts = new Toasts($.notices);

// --- one room's view ---------------------------------------------------------------

class RoomView {
  constructor(info) {
    this.name = info.name;
    this.info = info;
    this.joinRequested = false;
    this.joined = false;
    this.initialLoaded = false;
    this.loading = false;
    this.historyDone = false;
    this.oldest = null; // smallest seq shown
    this.bySeq = new Map(); // seq -> <li>
    this.byRef = new Map(); // ref -> <li> of our own unacknowledged message
    this.presence = new Map(); // user id -> user
    this.typing = new Map(); // user id -> {name, until}
    this.unread = 0;
    this.stick = true; // follow new messages
    this.scrollTop = 0;
    this.status = h("p", { class: "history-status", attrs: { role: "status" } });
    this.list = h("ol", {
      class: "messages",
      attrs: { role: "log", "aria-live": "polite", "aria-label": `Messages in ${info.name}` },
    });
    this.el = h("div", { class: "room-log" }, this.status, this.list);
  }
}

// --- start -------------------------------------------------------------------------

function boot() {
  wireChat();
  signin.start(); // resumes the session kept for this tab, or shows the form
}

// --- entering and leaving the chat ---------------------------------------------------

function enterChat(user) {
  me = user;
  $.chatView.hidden = false;
  setText($.meName, user.name);
  setText($.meAvatar, initials(user.name));
  $.meAvatar.className = `avatar small ${hueClass(user.name)}`;
  document.title = "Chat";

  // Unacknowledged messages survive a reload of the tab (sessionStorage, per user).
  conn = new Connection(session, { outboxKey: `chat.outbox.${user.id}` });
  conn.on("state", onState);
  conn.on("hello", onHello);
  conn.on("joined", onJoined);
  conn.on("left", (f) => {
    const view = rooms.get(f.room);
    if (view) view.joined = false;
  });
  conn.on("message", onMessage);
  conn.on("ack", onAck);
  conn.on("sendfailed", onSendFailed);
  conn.on("presence", onPresence);
  conn.on("presence_changes", onPresenceChanges);
  conn.on("typing", onTyping);
  conn.on("error", onErrorFrame);
  status.attach(conn);
  conn.start();

  loadRooms().then(() => {
    // Messages queued before a reload are still being sent: show them as pending.
    for (const item of conn?.pending() ?? []) {
      const view = rooms.get(item.room);
      if (!view) continue;
      view.joinRequested = true;
      addPendingBubble(view, item.ref, item.body);
    }
    const wanted = roomFromHash();
    const first = wanted && rooms.has(wanted) ? wanted : rooms.keys().next().value;
    if (first) selectRoom(first);
    else showNoRoom();
  });
  roomsTimer = setInterval(() => {
    if (conn?.online) loadRooms();
  }, ROOMS_POLL);
}

function leaveChat() {
  status.detach();
  conn?.dispose();
  conn = null;
  me = null;
  clearInterval(roomsTimer);
  rooms = new Map();
  current = null;
  clear($.roomList);
  toasts.clear();
  clear($.presenceList);
  showNoRoom();
  $.chatView.hidden = true;
  document.body.classList.remove("rooms-open", "people-open");
}

function wireChat() {
  $.signOut.addEventListener("click", async () => {
    const queued = conn?.pending().length ?? 0;
    if (queued && !window.confirm(`${queued === 1 ? "1 message has" : `${queued} messages have`} not been sent yet. Sign out anyway?`)) return;
    $.signOut.disabled = true;
    // Close our socket first, so the server's "revoked" close is not mistaken for an expiry.
    status.detach();
    conn?.dispose();
    conn = null;
    try {
      await signin.signOut(); // back to the form, via leaveChat
    } finally {
      $.signOut.disabled = false;
    }
  });

  // Drawers on narrow screens.
  $.toggleRooms.addEventListener("click", () => toggleDrawer("rooms-open"));
  $.togglePeople.addEventListener("click", () => toggleDrawer("people-open"));
  $.closePeople.addEventListener("click", () => closeDrawers());
  $.backdrop.addEventListener("click", () => closeDrawers());
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeDrawers();
  });

  // Composer.
  $.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendCurrent();
  });
  $.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !event.altKey) {
      event.preventDefault();
      sendCurrent();
    }
  });
  $.input.addEventListener("input", () => {
    updateCharCount();
    if (current && $.input.value.trim() && Date.now() - lastTypingSent > TYPING_EVERY) {
      lastTypingSent = Date.now();
      conn?.typing(current.name);
    }
  });

  // History paging and "stick to the bottom".
  $.scroller.addEventListener("scroll", () => {
    if (!current) return;
    current.stick = isAtBottom();
    current.scrollTop = $.scroller.scrollTop;
    if (current.stick) $.jump.hidden = true;
    if ($.scroller.scrollTop < 200) loadOlder(current);
  }, { passive: true });
  $.jump.addEventListener("click", () => {
    scrollToBottom();
    $.input.focus();
  });

  $.createRoom.addEventListener("submit", createRoom);
  $.addMember.addEventListener("submit", addMember);
  window.addEventListener("hashchange", () => {
    const name = roomFromHash();
    if (name && rooms.has(name) && name !== current?.name) selectRoom(name);
  });
  setInterval(pruneTyping, 1000);
}

function toggleDrawer(cls) {
  const open = !document.body.classList.contains(cls);
  closeDrawers();
  if (!open) return;
  document.body.classList.add(cls);
  $.backdrop.hidden = false;
  const rooms = cls === "rooms-open";
  (rooms ? $.toggleRooms : $.togglePeople).setAttribute("aria-expanded", "true");
  // Move focus into the drawer, to the current room or the close button.
  const target = rooms ? $.roomList.querySelector("[aria-current]") ?? $.roomList.querySelector("button") ?? $.newRoomName : $.closePeople;
  target?.focus();
}

function closeDrawers() {
  const wasOpen = document.body.classList.contains("rooms-open") ? $.toggleRooms : document.body.classList.contains("people-open") ? $.togglePeople : null;
  document.body.classList.remove("rooms-open", "people-open");
  $.backdrop.hidden = true;
  $.toggleRooms.setAttribute("aria-expanded", "false");
  $.togglePeople.setAttribute("aria-expanded", "false");
  // Give focus back to the button that opened the drawer, if focus was inside it.
  if (wasOpen && (wasOpen === $.toggleRooms ? $.sidebar : $.people).contains(document.activeElement)) wasOpen.focus();
}

// --- connection state ------------------------------------------------------------------

// The pill and the banner are shared/status.js; here only what the chat itself shows.
function onState(info) {
  if (info.state !== State.ONLINE) {
    for (const view of rooms.values()) view.joined = false;
    $.presenceList.classList.add("stale");
  }
  updatePendingLabels();
}

function onHello() {
  $.presenceList.classList.remove("stale");
  loadRooms();
}

// --- rooms -----------------------------------------------------------------------------

async function loadRooms() {
  let items;
  try {
    items = (await session.api("/api/rooms"))?.items ?? [];
  } catch (err) {
    if (err instanceof NetworkError) return; // the banner already says so
    notice(couldNot("load the room list", err), "danger");
    return;
  }
  for (const info of items) {
    const view = rooms.get(info.name);
    if (view) view.info = info;
    else rooms.set(info.name, new RoomView(info));
  }
  renderRoomList();
  if (current) renderRoomHeader();
}

function renderRoomList() {
  const names = [...rooms.keys()].sort((a, b) => a.localeCompare(b));
  clear($.roomList);
  for (const name of names) {
    const view = rooms.get(name);
    const label = view.info.private ? `${name}, private room` : name;
    const button = h(
      "button",
      {
        type: "button",
        class: "room-btn",
        data: { room: name },
        attrs: {
          "aria-current": view === current ? "page" : null,
          "aria-label": view.unread ? `${label}, ${view.unread} unread` : label,
        },
        on: { click: () => selectRoom(name) },
      },
      h("span", { class: view.info.private ? "room-icon lock" : "room-icon hash", attrs: { "aria-hidden": "true" } }),
      h("span", { class: "room-name", text: name }),
      view.unread ? h("span", { class: "unread", text: view.unread > 99 ? "99+" : view.unread, attrs: { "aria-hidden": "true" } }) : null,
    );
    $.roomList.append(h("li", {}, button));
  }
  $.roomsEmpty.hidden = names.length > 0;
  const unread = [...rooms.values()].reduce((n, v) => n + v.unread, 0);
  document.title = `${unread ? `(${unread}) ` : ""}${current ? `#${current.name} · ` : ""}Chat`;
}

function roomFromHash() {
  const raw = location.hash.slice(1);
  if (!raw) return null;
  try {
    return decodeURIComponent(raw);
  } catch {
    return null;
  }
}

function showNoRoom() {
  current = null;
  clear($.scroller).append($.roomEmpty);
  $.roomEmpty.hidden = false;
  setText($.roomTitle, "No room selected");
  $.roomBadge.hidden = true;
  setText($.roomMeta, "");
  $.input.disabled = true;
  $.send.disabled = true;
  $.addMember.hidden = true;
  clear($.presenceList);
  setText($.typing, "");
}

function selectRoom(name) {
  const view = rooms.get(name);
  if (!view) return;
  if (current && current !== view) current.scrollTop = $.scroller.scrollTop;
  const switching = current !== view;
  current = view;
  view.unread = 0;
  if (roomFromHash() !== name) history.replaceState(null, "", `#${encodeURIComponent(name)}`);
  clear($.scroller).append(view.el);
  renderRoomHeader();
  renderRoomList();
  renderPresence();
  renderTyping();
  $.jump.hidden = true;
  $.input.disabled = false;
  $.send.disabled = false;
  $.input.placeholder = `Message #${name}`;
  setText($.addMemberStatus, "");
  $.addMemberStatus.hidden = true;
  closeDrawers();
  if (!view.joinRequested) {
    view.joinRequested = true;
    setText(view.status, "Loading messages…");
    conn.join(name);
  }
  if (view.stick) scrollToBottom();
  else $.scroller.scrollTop = view.scrollTop;
  if (switching && window.matchMedia("(min-width: 721px)").matches) $.input.focus();
}

function renderRoomHeader() {
  const view = current;
  if (!view) return;
  setText($.roomTitle, `# ${view.name}`);
  $.roomBadge.hidden = !view.info.private;
  const owner = view.info.owner?.name;
  const parts = [];
  if (owner) parts.push(owner === me?.name ? "Created by you" : `Created by ${owner}`);
  parts.push(view.info.private ? "Only members can see this room" : "Anyone can join");
  setText($.roomMeta, parts.join(" · "));
  const canAdd = view.info.private && me && (view.info.owner?.id === me.id || me.role === "admin");
  $.addMember.hidden = !canAdd;
}

async function createRoom(event) {
  event.preventDefault();
  const name = $.newRoomName.value.trim();
  const error = (text) => showText($.createRoomError, text);
  if (!name) {
    error("Give the room a name.");
    $.newRoomName.focus();
    return;
  }
  error("");
  $.createRoomSubmit.disabled = true;
  try {
    const info = await session.api("/api/rooms", {
      method: "POST",
      json: { name, private: $.newRoomPrivate.checked },
    });
    rooms.set(info.name, new RoomView(info));
    $.newRoomName.value = "";
    $.newRoomPrivate.checked = false;
    renderRoomList();
    selectRoom(info.name);
  } catch (err) {
    error(
      requestErrorWords(err, {
        409: `A room called “${name}” already exists.`,
        429: (e) => `Slow down: try again in ${waitWords(e.retryAfter)}.`,
      }),
    );
  } finally {
    $.createRoomSubmit.disabled = false;
  }
}

async function addMember(event) {
  event.preventDefault();
  const view = current;
  const username = $.memberName.value.trim();
  const say = (text, ok) => {
    showText($.addMemberStatus, text);
    $.addMemberStatus.dataset.tone = ok ? "ok" : "danger";
  };
  if (!view || !username) {
    say("Enter a username.", false);
    return;
  }
  $.addMemberSubmit.disabled = true;
  try {
    await session.api(`/api/rooms/${encodeURIComponent(view.name)}/members`, {
      method: "POST",
      json: { username },
    });
    $.memberName.value = "";
    say(`${username} can now join #${view.name}.`, true);
  } catch (err) {
    const already = `${username} is already a member.`;
    const words = requestErrorWords(err, {
      404: `There is no user called “${username}”.`,
      403: "Only the room’s owner can add members.",
      409: already,
    });
    say(words, words === already);
  } finally {
    $.addMemberSubmit.disabled = false;
  }
}

// --- joining, history ------------------------------------------------------------------

function onJoined(frame) {
  const view = rooms.get(frame.room);
  if (!view) return;
  view.joined = true;
  view.presence = new Map(frame.presence.map((u) => [u.id, u]));
  if (view === current) {
    $.presenceList.classList.remove("stale");
    renderPresence();
  }
  if (!view.initialLoaded) {
    view.initialLoaded = true;
    loadOlder(view, true);
  }
  // Messages typed before the room was joined are now being sent.
  updatePendingLabels();
}

async function loadOlder(view, initial = false) {
  if (view.loading || view.historyDone || (!initial && !view.initialLoaded)) return;
  view.loading = true;
  view.list.setAttribute("aria-busy", "true");
  setText(view.status, initial ? "Loading messages…" : "Loading older messages…");
  view.status.classList.remove("error");
  const query = { limit: HISTORY_PAGE };
  if (view.oldest !== null) query.before = view.oldest;
  let items;
  try {
    items = (await session.api(`/api/rooms/${encodeURIComponent(view.name)}/messages`, { query }))?.items ?? [];
  } catch (err) {
    view.loading = false;
    view.list.removeAttribute("aria-busy");
    view.status.classList.add("error");
    clear(view.status).append(
      `${couldNot("load messages", err)} `,
      h("button", {
        type: "button",
        class: "link",
        text: "Try again",
        on: { click: () => loadOlder(view, initial && view.oldest === null) },
      }),
    );
    if (initial) view.initialLoaded = true;
    return;
  }
  const isCurrent = view === current;
  const beforeHeight = $.scroller.scrollHeight;
  const beforeTop = $.scroller.scrollTop;
  for (const item of items) addMessage(view, { ...item, room: view.name }, true);
  const lowest = items.reduce((min, m) => Math.min(min, m.seq), Infinity);
  if (items.length < HISTORY_PAGE || lowest <= 1) {
    view.historyDone = true;
    setText(view.status, view.oldest === null ? `This is the start of #${view.name}. Say hello!` : `This is the start of #${view.name}.`);
    view.status.classList.add("start");
  } else {
    setText(view.status, "");
  }
  view.loading = false;
  view.list.removeAttribute("aria-busy");
  if (isCurrent) {
    if (initial || view.stick) scrollToBottom();
    else $.scroller.scrollTop = beforeTop + ($.scroller.scrollHeight - beforeHeight);
    // Keep loading while the page is not tall enough to scroll.
    if (!view.historyDone && $.scroller.scrollHeight <= $.scroller.clientHeight + 200) loadOlder(view);
  }
}

// --- messages --------------------------------------------------------------------------

function messageElement({ seq, user, body, ts, state, ref }) {
  const own = me && user.id === me.id;
  const li = h(
    "li",
    {
      class: ["msg", own && "own"],
      data: { seq, ref, author: user.id, ts: Date.parse(ts) || Date.now(), state },
    },
    h("span", { class: `avatar ${hueClass(user.name)}`, text: initials(user.name), attrs: { "aria-hidden": "true" } }),
    h(
      "div",
      { class: "msg-main" },
      h(
        "p",
        { class: "msg-head" },
        h("span", { class: "msg-author", text: user.name }),
        own ? h("span", { class: "sr-only", text: " (you)" }) : null,
        " ",
        timeElement(ts, "msg-time"),
      ),
      h("div", { class: "msg-body" }, linkify(body)),
      h("p", { class: "msg-status", attrs: { "aria-live": "polite" } }),
    ),
  );
  return li;
}

function setMessageState(li, state, text = "", actions = []) {
  li.dataset.state = state;
  const status = li.querySelector(".msg-status");
  clear(status);
  if (text) status.append(text);
  for (const action of actions) status.append(" ", action);
}

/** Put `li` (seq'd) at its place by seq; our unacknowledged messages stay at the end. */
function insertSorted(view, li, seq) {
  const list = view.list;
  li.remove();
  const first = list.firstElementChild;
  if (first && first.dataset.seq !== undefined && seq < Number(first.dataset.seq)) {
    list.insertBefore(li, first);
  } else {
    let before = null;
    let node = list.lastElementChild;
    while (node && (node.dataset.seq === undefined || Number(node.dataset.seq) > seq)) {
      before = node;
      node = node.previousElementSibling;
    }
    list.insertBefore(li, before);
  }
  regroup(li);
  regroup(li.nextElementSibling);
}

/** Hide the author line of a message that follows one by the same author shortly before. */
function regroup(li) {
  if (!li) return;
  const prev = li.previousElementSibling;
  const cont =
    prev !== null &&
    prev.dataset.author === li.dataset.author &&
    Math.abs(Number(li.dataset.ts) - Number(prev.dataset.ts)) < GROUP_WINDOW &&
    prev.dataset.state !== "failed";
  li.classList.toggle("cont", cont);
}

function addMessage(view, frame, fromHistory = false) {
  if (view.bySeq.has(frame.seq)) return;
  let li = null;
  if (me && frame.user.id === me.id) {
    // Our own message came back before its ack (e.g. replayed after a reconnect):
    // adopt the pending bubble rather than show the message twice.
    for (const [ref, pending] of view.byRef) {
      if (pending.dataset.seq === undefined && pending.querySelector(".msg-body").textContent === frame.body) {
        li = pending;
        pending.dataset.seq = String(frame.seq);
        setMessageState(pending, "sent");
        view.byRef.delete(ref);
        break;
      }
    }
  }
  li ??= messageElement({ ...frame, state: "sent" });
  view.bySeq.set(frame.seq, li);
  view.oldest = view.oldest === null ? frame.seq : Math.min(view.oldest, frame.seq);
  const stick = view === current && view.stick;
  insertSorted(view, li, frame.seq);
  if (fromHistory) return;
  // A live (or recovered) message.
  if (view.typing.delete(frame.user.id) && view === current) renderTyping();
  if (view === current) {
    if (stick) scrollToBottom();
    else if (!me || frame.user.id !== me.id) $.jump.hidden = false;
  } else if (!me || frame.user.id !== me.id) {
    view.unread += 1;
    renderRoomList();
  }
}

function onMessage(frame) {
  const view = rooms.get(frame.room);
  if (view) addMessage(view, frame);
}

function sendCurrent() {
  const view = current;
  if (!view || !conn) return;
  const body = $.input.value.replace(/^\s*\n|\s+$/g, "");
  if (!body.trim()) return;
  const max = maxBody();
  const length = bodyLength(body);
  if (length > max) {
    notice(`That message is too long: ${length.toLocaleString()} characters, and the limit is ${max.toLocaleString()}.`, "danger");
    return;
  }
  const ref = conn.send(view.name, body);
  addPendingBubble(view, ref, body);
  $.input.value = "";
  updateCharCount();
  lastTypingSent = 0;
  scrollToBottom();
}

/** Show our own message, not yet acknowledged, at the end of the room. */
function addPendingBubble(view, ref, body) {
  if (view.byRef.has(ref)) return;
  const li = messageElement({ ref, user: me, body, ts: new Date().toISOString(), state: "pending" });
  view.byRef.set(ref, li);
  view.list.append(li);
  regroup(li);
  updatePendingLabel(li, view);
}

function updatePendingLabel(li, view) {
  if (li.dataset.state !== "pending" && li.dataset.state !== "queued") return;
  const waiting = !conn?.online || !view.joined;
  setMessageState(li, waiting ? "queued" : "pending", waiting ? "Waiting for connection…" : "Sending…");
}

function updatePendingLabels() {
  for (const view of rooms.values()) for (const li of view.byRef.values()) updatePendingLabel(li, view);
}

function onAck(ack) {
  const view = rooms.get(ack.room);
  const li = view?.byRef.get(ack.ref);
  if (!li) return;
  view.byRef.delete(ack.ref);
  const existing = view.bySeq.get(ack.seq);
  if (existing && existing !== li) {
    // Already shown (it was replayed first): drop the pending copy.
    const next = li.nextElementSibling;
    li.remove();
    regroup(next);
    return;
  }
  li.dataset.seq = String(ack.seq);
  li.dataset.ts = String(Date.parse(ack.ts) || Date.now());
  const time = li.querySelector("time");
  time.replaceWith(timeElement(ack.ts, "msg-time"));
  setMessageState(li, "sent");
  view.bySeq.set(ack.seq, li);
  view.oldest = view.oldest === null ? ack.seq : Math.min(view.oldest, ack.seq);
  insertSorted(view, li, ack.seq);
}

function onSendFailed(failure) {
  const view = rooms.get(failure.room);
  const li = view?.byRef.get(failure.ref);
  if (!li) return;
  view.byRef.delete(failure.ref);
  const retry = h("button", {
    type: "button",
    class: "link",
    text: "Try again",
    on: {
      click: () => {
        if (!conn) return;
        const ref = conn.send(failure.room, failure.body);
        li.dataset.ref = ref;
        view.byRef.set(ref, li);
        li.classList.remove("failed");
        setMessageState(li, "pending", "Sending…");
        updatePendingLabel(li, view);
      },
    },
  });
  const discard = h("button", {
    type: "button",
    class: "link",
    text: "Discard",
    on: {
      click: () => {
        const next = li.nextElementSibling;
        li.remove();
        regroup(next);
      },
    },
  });
  li.classList.add("failed");
  setMessageState(li, "failed", `Not sent: ${frameErrorWords(failure, { maxBody: maxBody() })}`, [retry, discard]);
}

// --- presence and typing ----------------------------------------------------------------

function onPresence(frame) {
  const joined = frame.event === "join" ? [frame.user] : [];
  const left = frame.event === "join" ? [] : [frame.user];
  onPresenceChanges({ room: frame.room, joined, left });
}

// Several changes of one room in one tick arrive as one frame.
function onPresenceChanges(frame) {
  const view = rooms.get(frame.room);
  if (!view) return;
  for (const user of frame.joined) view.presence.set(user.id, user);
  for (const user of frame.left) {
    view.presence.delete(user.id);
    view.typing.delete(user.id);
  }
  if (view === current) {
    renderPresence();
    renderTyping();
  }
}

function renderPresence() {
  const view = current;
  clear($.presenceList);
  if (!view) return;
  const people = [...view.presence.values()].sort((a, b) => {
    if (me && a.id === me.id) return -1;
    if (me && b.id === me.id) return 1;
    return a.name.localeCompare(b.name);
  });
  for (const user of people) {
    const you = me && user.id === me.id;
    $.presenceList.append(
      h(
        "li",
        { class: "person", data: { user: user.id } },
        h("span", { class: `avatar small ${hueClass(user.name)}`, text: initials(user.name), attrs: { "aria-hidden": "true" } }),
        h("span", { class: "person-name", text: user.name }),
        you ? h("span", { class: "muted", text: " (you)" }) : null,
        user.role === "bot" || user.role === "admin" ? h("span", { class: "badge", data: { tone: user.role === "admin" ? "accent" : "neutral" }, text: user.role }) : null,
      ),
    );
  }
  if (!people.length) $.presenceList.append(h("li", { class: "muted small-print", text: view.joined ? "Nobody else is here." : "Joining…" }));
  setText($.peopleCount, people.length ? String(people.length) : "");
}

function onTyping(frame) {
  const view = rooms.get(frame.room);
  if (!view || (me && frame.user.id === me.id)) return;
  view.typing.set(frame.user.id, { name: frame.user.name, until: Date.now() + TYPING_SHOW });
  if (view === current) renderTyping();
}

function pruneTyping() {
  const now = Date.now();
  for (const view of rooms.values()) {
    let changed = false;
    for (const [id, t] of view.typing) if (t.until <= now) changed = view.typing.delete(id) || changed;
    if (changed && view === current) renderTyping();
  }
}

function renderTyping() {
  const names = current ? [...current.typing.values()].map((t) => t.name).sort() : [];
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = `${names.length} people are typing…`;
  setText($.typing, text);
}

// --- errors (worded by shared/errors.js) --------------------------------------------------

function onErrorFrame(frame) {
  const op = frame.op ?? {};
  const later = ["rate_limited", "overloaded", "unavailable"].includes(frame.code);
  if (op.type === "send" && later) {
    // Still queued: the connection sends it again (same ref) after the wait.
    const li = rooms.get(op.room)?.byRef.get(frame.ref);
    if (li) setMessageState(li, "pending", `${sendDelayWords(frame.code)}: trying again in ${waitWords(frame.retry_after)}…`);
  }
  if (op.type === "send" && !later && frame.code !== "not_joined") return; // shown on the message
  if (op.type === "join" && (frame.code === "forbidden" || frame.code === "not_found")) {
    const view = rooms.get(op.room);
    if (view) {
      view.joinRequested = false;
      setText(view.status, frame.code === "forbidden" ? "You are not a member of this private room." : "This room no longer exists.");
      view.status.classList.add("error");
    }
  }
  notice(frameErrorWords(frame, { maxBody: maxBody() }), later ? "warn" : "danger");
}

/** A dismissible toast above the composer (tone: accent, warn or danger). */
function notice(text, tone = "accent") {
  toasts.show(text, tone);
}

// --- small helpers ---------------------------------------------------------------------

function maxBody() {
  return Number(conn?.limits?.max_body_chars) || 32000;
}

function updateCharCount() {
  const length = bodyLength($.input.value);
  const max = maxBody();
  const near = length > max * 0.9;
  $.charCount.hidden = !near;
  $.charCount.classList.toggle("over", length > max);
  const chars = (n) => (n === 1 ? "1 character" : `${n.toLocaleString()} characters`);
  if (near) setText($.charCount, length > max ? `${chars(length - max)} too many` : `${chars(max - length)} left`);
}

function isAtBottom() {
  return $.scroller.scrollHeight - $.scroller.scrollTop - $.scroller.clientHeight < STICK_SLACK;
}

function scrollToBottom() {
  $.scroller.scrollTop = $.scroller.scrollHeight;
  if (current) current.stick = true;
  $.jump.hidden = true;
}

boot();
