// chat.js — the browser chat UI at `/`.
//
// All protocol work (tokens, reconnecting, resuming, the outbound queue, de-duplicating)
// lives in shared/client.js; this module renders it. User text only ever reaches the
// page as text (shared/dom.js), never as HTML.

import { ApiError, Connection, NetworkError, Session, State, bodyLength } from "./shared/client.js";
import { byId, clear, h, hueClass, initials, linkify, setText, timeElement } from "./shared/dom.js";

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
let everOnline = false;
let connInfo = { state: State.IDLE };
let lastTypingSent = 0;

const $ = {
  splash: byId("splash"),
  authView: byId("auth-view"),
  authTitle: byId("auth-title"),
  authLead: byId("auth-lead"),
  authNotice: byId("auth-notice"),
  authForm: byId("auth-form"),
  authUser: byId("auth-username"),
  authPass: byId("auth-password"),
  authPassHint: byId("auth-password-hint"),
  authError: byId("auth-error"),
  authSubmit: byId("auth-submit"),
  authSwitch: byId("auth-switch"),
  authSwitchText: byId("auth-switch-text"),
  chatView: byId("chat-view"),
  toggleRooms: byId("toggle-rooms"),
  pill: byId("conn-pill"),
  pillText: byId("conn-pill-text"),
  meAvatar: byId("me-avatar"),
  meName: byId("me-name"),
  signOut: byId("sign-out"),
  banner: byId("banner"),
  bannerText: byId("banner-text"),
  retryNow: byId("retry-now"),
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

session.on("signedout", ({ reason }) => {
  if (!me) return;
  leaveChat();
  showAuth(
    reason === "signout"
      ? "You have signed out."
      : "Your session has ended. Please sign in again.",
  );
});

async function boot() {
  wireAuth();
  wireChat();
  // Resume with the refresh token kept in sessionStorage (see shared/client.js). If the
  // server is unreachable (say, restarting), keep trying rather than ask for a password.
  for (let attempt = 0; ; attempt += 1) {
    try {
      const user = await session.resume();
      if (user) enterChat(user);
      else showAuth();
      return;
    } catch (err) {
      const transient = err instanceof NetworkError || (err instanceof ApiError && (err.status >= 500 || err.status === 429));
      if (!transient || !session.signedIn) {
        showAuth();
        return;
      }
      const wait = Math.min(15, 2 ** attempt);
      setText($.splash, `The server cannot be reached. Trying again in ${wait} s…`);
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      setText($.splash, "Loading…");
    }
  }
}

// --- sign in / register ------------------------------------------------------------

let authMode = "signin";

function setAuthMode(mode) {
  authMode = mode;
  const register = mode === "register";
  setText($.authTitle, register ? "Create an account" : "Sign in");
  setText(
    $.authLead,
    register ? "Pick a username and a password to start chatting." : "Welcome back. Sign in to pick up where you left off.",
  );
  setText($.authSubmit, register ? "Create account" : "Sign in");
  setText($.authSwitchText, register ? "Already have an account?" : "New here?");
  setText($.authSwitch, register ? "Sign in instead" : "Create an account");
  $.authPass.autocomplete = register ? "new-password" : "current-password";
  $.authPassHint.hidden = !register;
  $.authError.hidden = true;
  document.title = register ? "Create an account · Chat" : "Sign in · Chat";
}

function showAuth(notice = "") {
  $.splash.hidden = true;
  $.chatView.hidden = true;
  $.authView.hidden = false;
  $.authNotice.hidden = !notice;
  setText($.authNotice, notice);
  setAuthMode(authMode);
  $.authPass.value = "";
  (($.authUser.value && $.authPass) || $.authUser).focus();
}

function authError(text) {
  $.authError.hidden = !text;
  setText($.authError, text);
}

function wireAuth() {
  $.authSwitch.addEventListener("click", () => {
    setAuthMode(authMode === "signin" ? "register" : "signin");
    $.authUser.focus();
  });
  $.authForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = $.authUser.value.trim();
    const password = $.authPass.value;
    if (!username || !password) {
      authError("Enter a username and a password.");
      (username ? $.authPass : $.authUser).focus();
      return;
    }
    const register = authMode === "register";
    $.authSubmit.disabled = true;
    setText($.authSubmit, register ? "Creating account…" : "Signing in…");
    authError("");
    try {
      if (register) await session.register(username, password);
      const user = await session.signIn(username, password);
      $.authPass.value = "";
      $.authNotice.hidden = true;
      enterChat(user);
    } catch (err) {
      authError(describeAuthError(err, register));
      $.authPass.focus();
    } finally {
      $.authSubmit.disabled = false;
      setText($.authSubmit, register ? "Create account" : "Sign in");
    }
  });
}

function describeAuthError(err, register) {
  if (err instanceof NetworkError) return "The server cannot be reached. Check your connection and try again.";
  if (!(err instanceof ApiError)) return "Something went wrong. Please try again.";
  if (err.status === 429) return `Too many attempts. Try again in ${waitWords(err.retryAfter ?? 30)}.`;
  if (register && err.status === 409) return "That username is taken. Pick another one.";
  if (register && err.status === 403) return "Registration is turned off here. Ask an administrator for an account.";
  if (!register && (err.status === 400 || err.status === 401)) return "Wrong username or password.";
  if (err.status === 422 || err.status === 400) return err.detail;
  if (err.status >= 500) return "The server had a problem. Please try again in a moment.";
  return err.detail;
}

// --- entering and leaving the chat ---------------------------------------------------

function enterChat(user) {
  me = user;
  $.splash.hidden = true;
  $.authView.hidden = true;
  $.chatView.hidden = false;
  setText($.meName, user.name);
  setText($.meAvatar, initials(user.name));
  $.meAvatar.className = `avatar small ${hueClass(user.name)}`;
  document.title = "Chat";
  everOnline = false;

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
  conn.on("queue", () => updateBanner());
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
  conn?.dispose();
  conn = null;
  me = null;
  clearInterval(roomsTimer);
  rooms = new Map();
  current = null;
  clear($.roomList);
  clear($.notices);
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
    conn?.dispose();
    conn = null;
    try {
      await session.signOut();
    } finally {
      $.signOut.disabled = false;
    }
  });
  $.retryNow.addEventListener("click", () => conn?.retryNow());

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

let bannerTimer = null;

function onState(info) {
  connInfo = info;
  if (info.state === State.ONLINE) everOnline = true;
  if (info.state !== State.ONLINE) {
    for (const view of rooms.values()) view.joined = false;
    $.presenceList.classList.add("stale");
  }
  updateBanner();
  updatePendingLabels();
}

function updateBanner() {
  clearTimeout(bannerTimer);
  const { state, retryAt, code } = connInfo;
  const queued = conn ? conn.pending().length : 0;
  const queuedWords = queued
    ? ` ${queued === 1 ? "1 message is" : `${queued} messages are`} waiting and will be sent when it is back.`
    : "";
  let pill = "Connecting…";
  let text = "";
  let retry = false;
  switch (state) {
    case State.ONLINE:
      pill = "Online";
      break;
    case State.CONNECTING:
      pill = everOnline ? "Reconnecting…" : "Connecting…";
      text = everOnline ? `Reconnecting…${queuedWords}` : "";
      break;
    case State.WAITING: {
      const secs = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      pill = "Reconnecting";
      const why = everOnline ? closeWords(code) : "Cannot reach the chat server.";
      text = `${why} Reconnecting in ${secs} s…${queuedWords}`;
      retry = true;
      bannerTimer = setTimeout(updateBanner, 250);
      break;
    }
    case State.OFFLINE:
      pill = "Offline";
      text = `You are offline. We will reconnect when your network is back.${queuedWords}`;
      retry = true;
      break;
    case State.SIGNED_OUT:
      pill = "Signed out";
      break;
    default:
      pill = "Offline";
  }
  $.pill.dataset.state = state === State.CONNECTING && everOnline ? "waiting" : state;
  setText($.pillText, pill);
  $.banner.hidden = !text;
  $.banner.dataset.state = state;
  setText($.bannerText, text);
  $.retryNow.hidden = !retry;
}

function closeWords(code) {
  switch (code) {
    case 1001:
      return "The server is restarting.";
    case 4002:
      return "The connection stopped responding.";
    case 4008:
      return "The connection fell behind.";
    case 4009:
      return "Too many chat windows are open; close some.";
    case 4029:
      return "Disconnected for sending too fast.";
    case 1011:
      return "The server had a problem.";
    default:
      return "Connection lost.";
  }
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
    notice(`Could not load the room list: ${err.message}`, "error");
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
  const error = (text) => {
    $.createRoomError.hidden = !text;
    setText($.createRoomError, text);
  };
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
    if (err instanceof ApiError && err.status === 409) error(`A room called “${name}” already exists.`);
    else if (err instanceof ApiError && err.status === 429) error(`Slow down: try again in ${waitWords(err.retryAfter)}.`);
    else if (err instanceof NetworkError) error("The server cannot be reached. Try again in a moment.");
    else error(err.message);
  } finally {
    $.createRoomSubmit.disabled = false;
  }
}

async function addMember(event) {
  event.preventDefault();
  const view = current;
  const username = $.memberName.value.trim();
  const status = (text, ok) => {
    $.addMemberStatus.hidden = !text;
    $.addMemberStatus.classList.toggle("ok", Boolean(ok));
    setText($.addMemberStatus, text);
  };
  if (!view || !username) {
    status("Enter a username.", false);
    return;
  }
  $.addMemberSubmit.disabled = true;
  try {
    await session.api(`/api/rooms/${encodeURIComponent(view.name)}/members`, {
      method: "POST",
      json: { username },
    });
    $.memberName.value = "";
    status(`${username} can now join #${view.name}.`, true);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) status(`There is no user called “${username}”.`);
    else if (err instanceof ApiError && err.status === 403) status("Only the room’s owner can add members.");
    else if (err instanceof ApiError && err.status === 409) status(`${username} is already a member.`, true);
    else if (err instanceof NetworkError) status("The server cannot be reached. Try again in a moment.");
    else status(err.message);
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
      err instanceof NetworkError ? "Could not load messages: the server cannot be reached. " : `Could not load messages: ${err.message} `,
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
    notice(`That message is too long: ${length.toLocaleString()} characters, and the limit is ${max.toLocaleString()}.`, "error");
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
  setMessageState(li, "failed", `Not sent: ${errorWords(failure)}`, [retry, discard]);
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
        user.role === "bot" ? h("span", { class: "tag", text: "bot" }) : null,
        user.role === "admin" ? h("span", { class: "tag", text: "admin" }) : null,
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

// --- errors in plain words --------------------------------------------------------------

function onErrorFrame(frame) {
  const op = frame.op ?? {};
  const later = ["rate_limited", "overloaded", "unavailable"].includes(frame.code);
  if (op.type === "send" && later) {
    // Still queued: the connection sends it again (same ref) after the wait.
    const li = rooms.get(op.room)?.byRef.get(frame.ref);
    const why = frame.code === "rate_limited" ? "Sending too fast" : "The server is busy";
    if (li) setMessageState(li, "pending", `${why}: trying again in ${waitWords(frame.retry_after)}…`);
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
  notice(errorWords(frame), later ? "warn" : "error");
}

function errorWords({ code, detail, retry_after: retryAfter, op = {}, room }) {
  const where = op.room ?? room;
  switch (code) {
    case "rate_limited":
      return op.type === "send"
        ? `You are sending messages too fast. Yours will go out in ${waitWords(retryAfter)}.`
        : `Slow down a little: try again in ${waitWords(retryAfter)}.`;
    case "overloaded":
    case "unavailable":
      return op.type === "send"
        ? `The server is busy: yours will go out in ${waitWords(retryAfter)}.`
        : `The server is busy: try again in ${waitWords(retryAfter)}.`;
    case "too_large":
      return `That message is too large to send (the limit is ${maxBody().toLocaleString()} characters).`;
    case "forbidden":
      return op.type === "join" ? `You cannot join #${where}: it is a private room.` : "You are not allowed to do that here.";
    case "not_found":
      return op.type === "join" ? `The room #${where} does not exist any more.` : "That room does not exist any more.";
    case "not_joined":
      return "You were not in that room any more; rejoining and sending again.";
    case "bad_frame":
      return op.type === "send"
        ? `The server refused it: ${detail}.`
        : `The server could not understand a request (${detail}). Reloading the page may help.`;
    case "resync_failed":
      return `Some messages missed in #${where} could not be loaded. Reload the page to see them.`;
    case "internal":
      return "The server had a problem with that. Please try again.";
    default:
      return detail || "Something went wrong.";
  }
}

function waitWords(seconds) {
  const s = Math.max(1, Math.ceil(Number(seconds) || 1));
  if (s < 90) return s === 1 ? "1 second" : `${s} seconds`;
  const m = Math.ceil(s / 60);
  return `${m} minutes`;
}

const noticeTimers = new WeakMap();

/** A dismissible notice above the composer; repeated texts are not stacked. */
function notice(text, level = "info") {
  for (const el of $.notices.children) {
    if (el.dataset.text === text) {
      clearTimeout(noticeTimers.get(el));
      noticeTimers.set(el, setTimeout(() => el.remove(), 8000));
      return;
    }
  }
  const el = h(
    "div",
    { class: `notice-item ${level}`, data: { text }, attrs: { role: level === "error" ? "alert" : "status" } },
    h("span", { text }),
    h("button", {
      type: "button",
      class: "notice-close",
      attrs: { "aria-label": "Dismiss" },
      text: "×",
      on: { click: () => el.remove() },
    }),
  );
  $.notices.append(el);
  while ($.notices.children.length > 3) $.notices.firstElementChild.remove();
  noticeTimers.set(el, setTimeout(() => el.remove(), 8000));
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
