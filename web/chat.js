// chat.js — the browser chat UI at `/`.
//
// All protocol work (tokens, reconnecting, resuming, the outbound queue, de-duplicating)
// lives in shared/client.js; this module renders it. The sign-in view, the connection
// indicator, the wording of errors and the toasts are shared with the admin console
// (shared/signin.js, status.js, errors.js, toasts.js). User text only ever reaches the
// page as text (shared/dom.js), never as HTML.
//
// Conversations (issue 10) live in small modules of their own: chat-changes.js (edits,
// deletes, reactions, reply quotes), chat-people.js (starting a DM, `@` completion),
// chat-inbox.js (the bell, the inbox, the browser's notifications) and chat-settings.js
// (room settings, your display name); search (issue 11) is chat-search.js. This module
// wires them to the connection.

import { Connection, NetworkError, Session, State, bodyLength } from "./shared/client.js";
import { byId, clear, h, hueClass, initials, linkify, setText, showText, timeElement } from "./shared/dom.js";
import { couldNot, frameErrorWords, requestErrorWords, sendDelayWords, waitWords } from "./shared/errors.js";
import { SignIn } from "./shared/signin.js";
import { ConnectionStatus } from "./shared/status.js";
import { Toasts } from "./shared/toasts.js";
import { MessageState, QUICK_EMOJI, armConfirm, displayName, excerptOf, renderReactions, renderText, replyQuote } from "./chat-changes.js";
import { FileTray, showAttachments } from "./chat-files.js";
import { Inbox } from "./chat-inbox.js";
import { MessageSearch } from "./chat-search.js";
import { DmPicker, MentionCompleter } from "./chat-people.js";
import { ProfileForm, RoomSettings } from "./chat-settings.js";

const HISTORY_PAGE = 50; // messages per history request
const TYPING_EVERY = 3000; // ms between our own `typing` frames
const TYPING_SHOW = 5000; // ms a "… is typing" stays without a new frame
const GROUP_WINDOW = 5 * 60 * 1000; // consecutive messages by one author within this are grouped
const ROOMS_POLL = 30_000; // ms between room list refreshes
const STICK_SLACK = 48; // px from the bottom that still counts as "at the bottom"
const READ_EVERY = 800; // ms between our `read` frames for one room
const JUMP_PAGES = 20; // history pages loaded at most to reach a notification's message

const session = new Session();
let conn = null;
let me = null; // {id, name, role}
let rooms = new Map(); // name -> RoomView
let current = null; // RoomView
let roomsTimer = null;
let lastTypingSent = 0;
let replyTarget = null; // {room, seq, user, excerpt}: what the composer answers
let roomsReload = null; // timer of a pending room list refresh

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
  dmList: byId("dm-list"),
  roomSettingsBtn: byId("room-settings-btn"),
  archivedBadge: byId("archived-badge"),
  archivedNote: byId("archived-note"),
  replyBar: byId("reply-bar"),
  replyLabel: byId("reply-label"),
  replyExcerpt: byId("reply-excerpt"),
  replyCancel: byId("reply-cancel"),
  profileBtn: byId("profile-btn"),
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

const inbox = new Inbox({
  session,
  els: {
    bell: byId("bell"),
    count: byId("bell-count"),
    panel: byId("inbox"),
    list: byId("inbox-list"),
    empty: byId("inbox-empty"),
    status: byId("inbox-status"),
    markRead: byId("inbox-mark-read"),
    close: byId("inbox-close"),
    desktop: byId("desktop-notify"),
    desktopStatus: byId("desktop-notify-status"),
  },
  onOpen: openNotification,
  onLive: onLiveNotification,
});
const search = new MessageSearch({
  session,
  els: {
    form: byId("search-form"),
    input: byId("search-input"),
    panel: byId("search-panel"),
    list: byId("search-results"),
    status: byId("search-status"),
    more: byId("search-more"),
    close: byId("search-close"),
    thisRoom: byId("search-this-room"),
  },
  currentRoom: () => current?.name ?? null,
  roomLabel: (name) => (rooms.has(name) ? roomLabel(rooms.get(name)) : `#${name}`),
  onOpen: openNotification, // the same way: open the room, load history to the message
});
const dmPicker = new DmPicker({
  session,
  input: byId("dm-search"),
  results: byId("dm-results"),
  status: byId("dm-status"),
  me: () => me,
  startDm,
});
const mentions = new MentionCompleter({ session, input: $.input, list: byId("mention-list") });
// Files picked for the next message (button, drop on the room, paste in the composer).
const files = new FileTray({
  session,
  tray: byId("upload-tray"),
  input: byId("file-input"),
  button: byId("attach"),
  dropZone: byId("room"),
  pasteTarget: $.input,
  room: () => (current && !current.info.archived ? current.name : null),
  limits: () => conn?.limits ?? {},
  notice,
  changed: () => {},
});
const settings = new RoomSettings({
  session,
  els: {
    dialog: byId("settings"),
    title: byId("settings-title"),
    topicForm: byId("topic-form"),
    topicInput: byId("topic-input"),
    topicSave: byId("topic-save"),
    levels: byId("notify-level"),
    members: byId("members-list"),
    status: byId("settings-status"),
    archive: byId("archive-toggle"),
    leave: byId("leave-room"),
    close: byId("settings-close"),
  },
  me: () => me,
  onLeft: (room) => dropRoom(room, `You left ${roomLabel(rooms.get(room))}.`),
  onInfo: (room, info) => onRoomFrame({ room, topic: info.topic ?? null, archived: Boolean(info.archived) }),
});
const profile = new ProfileForm({
  session,
  els: {
    dialog: byId("profile"),
    form: byId("profile-form"),
    username: byId("profile-username"),
    input: byId("display-name"),
    save: byId("profile-save"),
    status: byId("profile-status"),
    close: byId("profile-close"),
  },
  me: () => me,
  onSaved: ({ display_name }) => {
    me = { ...me, display_name };
    renderMe();
  },
});

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
    this.unread = 0; // messages after our read cursor, not ours (from the server, then live)
    this.readSeq = 0; // our read cursor
    this.countedUpto = 0; // messages up to this seq are already in `unread`
    this.readSent = 0; // when our last `read` frame for the room went (ms)
    this.readTimer = null;
    this.newest = 0; // highest seq shown
    this.states = new Map(); // seq -> MessageState (also for changes that came first)
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
  renderMe();
  document.title = "Chat";

  // Unacknowledged messages survive a reload of the tab (sessionStorage, per user).
  conn = new Connection(session, { outboxKey: `chat.outbox.${user.id}`, wsProbeInterval: wsProbeInterval() });
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
  conn.on("edited", (f) => onChange(f, (state) => state.applyEdited(f)));
  conn.on("deleted", (f) => onChange(f, (state) => state.applyDeleted(f)));
  conn.on("reaction", (f) => onChange(f, (state) => state.applyReaction(f)));
  conn.on("read", onRead);
  conn.on("notification", (f) => inbox.live(f));
  conn.on("notifications_read", (f) => inbox.markedRead(f));
  conn.on("room", onRoomFrame);
  conn.on("removed", (f) => {
    const label = roomLabel(rooms.get(f.room));
    dropRoom(f.room, settings.leaving === f.room ? `You left ${label}.` : `You are no longer a member of ${label}.`);
  });
  conn.on("error", onErrorFrame);
  status.attach(conn);
  conn.start();

  loadRooms().then(() => {
    // Messages queued before a reload are still being sent: show them as pending.
    for (const item of conn?.pending() ?? []) {
      const view = rooms.get(item.room);
      if (!view) continue;
      view.joinRequested = true;
      addPendingBubble(view, item.ref, item.body, item.reply_to ? { seq: item.reply_to, user: null, excerpt: "an earlier message" } : null);
    }
    const wanted = roomFromHash();
    // Without a room in the URL, land in the first room by name (DMs come after rooms).
    const byName = [...rooms.values()].sort((a, b) => (a.info.kind === "dm") - (b.info.kind === "dm") || a.name.localeCompare(b.name));
    const first = wanted && rooms.has(wanted) ? wanted : byName[0]?.name;
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
  clear($.dmList);
  inbox.reset();
  search.reset();
  dmPicker.reset();
  cancelReply();
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
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
    if (mentions.handleKey(event)) return;
    if (event.key === "Escape" && replyTarget) {
      event.preventDefault();
      cancelReply();
      return;
    }
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
    if (current.stick) markReadSoon(current);
  }, { passive: true });
  document.addEventListener("visibilitychange", () => {
    if (current) markReadSoon(current);
  });
  $.replyCancel.addEventListener("click", () => {
    cancelReply();
    $.input.focus();
  });
  $.roomSettingsBtn.addEventListener("click", () => {
    if (current) settings.open(current);
  });
  $.profileBtn.addEventListener("click", () => profile.open());
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

function onHello(frame) {
  $.presenceList.classList.remove("stale");
  if (frame.user && me && frame.user.id === me.id && frame.user.display_name !== undefined) {
    me = { ...me, display_name: frame.user.display_name ?? null };
    renderMe();
  }
  inbox.hello(frame);
  loadRooms();
}

// --- rooms -----------------------------------------------------------------------------

async function loadRooms() {
  clearTimeout(roomsReload);
  roomsReload = null;
  let items;
  try {
    items = (await session.api("/api/rooms"))?.items ?? [];
  } catch (err) {
    if (err instanceof NetworkError) return; // the banner already says so
    notice(couldNot("load the room list", err), "danger");
    return;
  }
  const listed = new Set();
  for (const info of items) {
    listed.add(info.name);
    let view = rooms.get(info.name);
    if (view) view.info = { ...view.info, ...info };
    else rooms.set(info.name, (view = new RoomView(info)));
    // A room this page follows live counts for itself; the others take the server's word.
    if ((!view.joined || view.trustServer) && typeof info.unread === "number") view.unread = info.unread;
    view.trustServer = false;
    view.mentions = Number(info.mentions) || 0;
    // Direct messages are few and personal: follow them all, so their badges move live.
    if (info.kind === "dm" && !view.joinRequested && conn) {
      view.joinRequested = true;
      conn.join(info.name);
    }
  }
  // A room we may no longer read (removed meanwhile) leaves the list.
  for (const name of [...rooms.keys()]) {
    if (!listed.has(name) && !conn?.pending().some((p) => p.room === name)) {
      if (rooms.get(name) === current) continue; // told by a `removed` frame instead
      rooms.delete(name);
      conn?.forget(name);
    }
  }
  renderRoomList();
  if (current) renderRoomHeader();
}

/** Refresh the room list shortly (several reasons in a burst make one request). */
function loadRoomsSoon(delay = 300) {
  if (roomsReload) return;
  roomsReload = setTimeout(() => loadRooms(), delay);
}

function roomLabel(view) {
  if (!view) return "the room";
  return view.info.kind === "dm" ? `the conversation with ${displayName(view.info.peer)}` : `#${view.name}`;
}

function renderRoomList() {
  const views = [...rooms.values()];
  const byName = (a, b) => a.name.localeCompare(b.name);
  const dmName = (v) => displayName(v.info.peer ?? { name: v.name });
  const plain = views.filter((v) => v.info.kind !== "dm").sort(byName);
  const dms = views.filter((v) => v.info.kind === "dm").sort((a, b) => dmName(a).localeCompare(dmName(b)));
  clear($.roomList);
  clear($.dmList);
  for (const view of plain) $.roomList.append(h("li", {}, roomButton(view, view.name, view.info.private ? "room-icon lock" : "room-icon hash")));
  for (const view of dms) $.dmList.append(h("li", {}, roomButton(view, dmName(view), `avatar tiny ${hueClass(view.info.peer?.name ?? view.name)}`, initials(dmName(view)))));
  $.roomsEmpty.hidden = plain.length > 0;
  const unread = views.reduce((n, v) => n + v.unread, 0);
  const here = current ? (current.info.kind === "dm" ? `${dmName(current)} · ` : `#${current.name} · `) : "";
  document.title = `${unread ? `(${unread}) ` : ""}${here}Chat`;
}

let describedBy = 0; // ids of the room buttons' descriptions

function roomButton(view, shown, iconClass, iconText = null) {
  // The name says what it is; the description what is new (so the name stays stable).
  const label = view.info.kind === "dm" ? `${shown}, direct message` : view.info.private ? `${shown}, private room` : shown;
  const news = [];
  if (view.unread) news.push(`${view.unread} unread`);
  if (view.mentions) news.push(view.mentions === 1 ? "1 mention" : `${view.mentions} mentions`);
  if (view.info.archived) news.push("archived");
  view.newsId ??= `room-news-${++describedBy}`; // stable, so a reference to it stays good
  const descId = news.length ? view.newsId : null;
  return h(
    "button",
    {
      type: "button",
      class: ["room-btn", view.unread && "has-unread", view.info.archived && "archived"],
      data: { room: view.name, kind: view.info.kind ?? "room" },
      attrs: { "aria-current": view === current ? "page" : null, "aria-label": label, "aria-describedby": descId },
      on: { click: () => selectRoom(view.name) },
    },
    h("span", { class: iconClass, text: iconText, attrs: { "aria-hidden": "true" } }),
    h("span", { class: "room-name", text: shown }),
    view.mentions ? h("span", { class: "mention-badge", text: "@", attrs: { "aria-hidden": "true" } }) : null,
    view.unread ? h("span", { class: "unread", text: view.unread > 99 ? "99+" : view.unread, attrs: { "aria-hidden": "true" } }) : null,
    descId ? h("span", { id: descId, class: "sr-only", text: news.join(", ") }) : null,
  );
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
  $.archivedBadge.hidden = true;
  $.roomSettingsBtn.hidden = true;
  $.archivedNote.hidden = true;
  setText($.roomMeta, "");
  $.input.disabled = true;
  $.send.disabled = true;
  byId("attach").disabled = true;
  files.showRoom(null);
  $.addMember.hidden = true;
  cancelReply();
  clear($.presenceList);
  setText($.typing, "");
  renderRoomList();
}

function selectRoom(name) {
  const view = rooms.get(name);
  if (!view) return;
  if (current && current !== view) current.scrollTop = $.scroller.scrollTop;
  const switching = current !== view;
  current = view;
  if (switching) cancelReply();
  if (roomFromHash() !== name) history.replaceState(null, "", `#${encodeURIComponent(name)}`);
  clear($.scroller).append(view.el);
  renderRoomHeader();
  renderRoomList();
  renderPresence();
  renderTyping();
  $.jump.hidden = true;
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
  markReadSoon(view);
  if (switching && !$.input.disabled && window.matchMedia("(min-width: 721px)").matches) $.input.focus();
}

function renderRoomHeader() {
  const view = current;
  if (!view) return;
  const dm = view.info.kind === "dm";
  const archived = Boolean(view.info.archived);
  setText($.roomTitle, dm ? `@ ${displayName(view.info.peer ?? { name: view.name })}` : `# ${view.name}`);
  $.roomBadge.hidden = dm || !view.info.private;
  $.archivedBadge.hidden = !archived;
  $.roomSettingsBtn.hidden = false;
  const owner = view.info.owner?.name;
  const parts = [];
  if (view.info.topic) parts.push(view.info.topic);
  if (dm) parts.push(`Direct message with ${displayName(view.info.peer)} (${view.info.peer?.name ?? "?"})`);
  else {
    if (owner) parts.push(owner === me?.name ? "Created by you" : `Created by ${owner}`);
    parts.push(view.info.private ? "Only members can see this room" : "Anyone can join");
  }
  setText($.roomMeta, parts.join(" · "));
  const canAdd = !dm && view.info.private && me && (view.info.owner?.id === me.id || me.role === "admin");
  $.addMember.hidden = !canAdd;
  // An archived room is read-only: no composer, no reactions, no edits.
  view.el.classList.toggle("archived", archived);
  $.archivedNote.hidden = !archived;
  $.input.disabled = archived;
  $.send.disabled = archived;
  byId("attach").disabled = archived;
  files.showRoom(view.name);
  $.input.placeholder = archived ? "This room is archived" : dm ? `Message ${displayName(view.info.peer)}` : `Message #${view.name}`;
  if (archived) cancelReply();
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
  // The server's read state; replayed messages (seq <= last_seq) are counted in `unread`.
  view.readSeq = Math.max(view.readSeq, Number(frame.read_seq) || 0);
  view.unread = Number(frame.unread) || 0;
  view.countedUpto = Math.max(view.countedUpto, Number(frame.last_seq) || 0);
  if ("topic" in frame || "archived" in frame) {
    view.info = { ...view.info, topic: frame.topic ?? null, archived: Boolean(frame.archived) };
    if (view === current) renderRoomHeader();
  }
  renderRoomList();
  markReadSoon(view);
  // Too many changes while we were away to be resent one by one: read the history again.
  if (frame.changes_truncated && view.initialLoaded) rereadHistory(view);
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
    setText(view.status, view.oldest === null ? `This is the start of ${roomLabel(view)}. Say hello!` : `This is the start of ${roomLabel(view)}.`);
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
    markReadSoon(view);
  }
}

/** Re-read the messages shown (edits, deletes, reactions missed), page by page. */
async function rereadHistory(view) {
  let after = (view.oldest ?? 1) - 1;
  for (let page = 0; page < JUMP_PAGES && after < view.newest; page += 1) {
    let items;
    try {
      items = (await session.api(`/api/rooms/${encodeURIComponent(view.name)}/messages`, { query: { after, limit: 100 } }))?.items ?? [];
    } catch (err) {
      notice(couldNot(`bring ${roomLabel(view)} up to date (reload the page)`, err), "warn");
      return;
    }
    if (!items.length) return;
    for (const item of items) {
      if (!view.bySeq.has(item.seq)) continue; // not shown yet: it comes as a message
      stateOf(view, item.seq).reset(item);
      paintMessage(view, item.seq);
    }
    after = Math.max(after, ...items.map((m) => m.seq));
  }
}

// --- messages --------------------------------------------------------------------------

function messageElement(view, { seq, user, body, ts, state, ref, reply_to: reply }) {
  const own = me && user.id === me.id;
  // The author, the room's owner or an admin may delete (the server checks again).
  const canDelete = own || me?.role === "admin" || (view.info.kind !== "dm" && view.info.owner?.id === me?.id);
  const shown = displayName(user);
  const li = h(
    "li",
    {
      class: ["msg", own && "own"],
      data: { seq, ref, room: view.name, author: user.id, ts: Date.parse(ts) || Date.now(), state },
    },
    h("span", { class: `avatar ${hueClass(user.name)}`, text: initials(shown), attrs: { "aria-hidden": "true" } }),
    h(
      "div",
      { class: "msg-main" },
      h(
        "p",
        { class: "msg-head" },
        h("span", { class: "msg-author", text: shown, title: shown === user.name ? null : user.name }),
        own ? h("span", { class: "sr-only", text: " (you)" }) : null,
        " ",
        timeElement(ts, "msg-time"),
      ),
      replyQuote(reply, jumpToSeq),
      h("div", { class: "msg-body" }, linkify(body)),
      h("div", { class: "msg-files", hidden: true }),
      // Under the text, not in the head: a grouped message shows no head.
      h("p", { class: "msg-edited", text: "(edited)", hidden: true }),
      h("div", { class: "msg-reactions", hidden: true }),
      h("p", { class: "msg-status", attrs: { "aria-live": "polite" } }),
    ),
    messageActions(own, canDelete),
  );
  if (me && !own && mentionsMe(body)) li.classList.add("mentions-me");
  // The reaction picker closes when the pointer or the focus leaves the message.
  const closePicker = (event) => {
    if (!li.contains(event.relatedTarget)) li.querySelector(".react-picker").hidden = true;
  };
  li.addEventListener("mouseleave", closePicker);
  li.addEventListener("focusout", closePicker);
  return li;
}

function mentionsMe(body) {
  if (!me) return false;
  const escaped = me.name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[^\\w@])@${escaped}(?![\\w-])`, "i").test(body);
}

/** The toolbar of a message (shown on hover and focus): reply, react, edit, delete. */
function messageActions(own, canDelete) {
  const act = (label, cls, handler) =>
    h("button", {
      type: "button",
      class: `msg-act ${cls}`,
      text: label,
      on: { click: (event) => handler(event.currentTarget.closest(".msg"), event.currentTarget) },
    });
  const picker = h(
    "div",
    { class: "react-picker", hidden: true, attrs: { role: "group", "aria-label": "Pick a reaction" } },
    QUICK_EMOJI.map((emoji) =>
      h("button", {
        type: "button",
        class: "react-pick",
        text: emoji,
        data: { emoji },
        attrs: { "aria-label": `React with ${emoji}` },
        on: {
          click: (event) => {
            const li = event.currentTarget.closest(".msg");
            picker.hidden = true;
            toggleReaction(li, emoji);
          },
        },
      }),
    ),
  );
  return h(
    "div",
    { class: "msg-actions", attrs: { role: "toolbar", "aria-label": "Message actions" } },
    act("Reply", "act-reply", (li) => startReply(li)),
    act("React", "act-react", () => {
      picker.hidden = !picker.hidden;
      if (!picker.hidden) picker.querySelector("button")?.focus();
    }),
    own ? act("Edit", "act-edit", (li) => startEdit(li)) : null,
    canDelete && act("Delete", "act-delete", (li, button) => armConfirm(button, "Really delete?", () => requestChange(li, { type: "delete" }))),
    picker,
  );
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

/** The state of message `seq` of a room, made on first use (a change may come first). */
function stateOf(view, seq) {
  let state = view.states.get(seq);
  if (!state) view.states.set(seq, (state = new MessageState()));
  return state;
}

/** Show message `seq` as its state says: text or "message deleted", edited mark, reactions. */
function paintMessage(view, seq) {
  const li = view.bySeq.get(seq);
  const state = view.states.get(seq);
  if (!li || !state) return;
  renderText(li, state);
  const box = li.querySelector(".msg-files");
  if (box && state.deleted) box.hidden = true;
  renderReactions(li, state, me?.name, (emoji, on) => requestChange(li, { type: "react", emoji, on }));
  li.classList.toggle("mentions-me", Boolean(me && state.user?.id !== me.id && !state.deleted && mentionsMe(state.body)));
}

function addMessage(view, frame, fromHistory = false) {
  const state = stateOf(view, frame.seq);
  if (!state.known) {
    state.fromMessage(frame);
    state.user = frame.user;
  }
  if (view.bySeq.has(frame.seq)) {
    showAttachments(session, view.bySeq.get(frame.seq), frame.attachments); // our own, acked first
    return;
  }
  let li = null;
  const own = me && frame.user.id === me.id;
  if (own) {
    // Our own message came back before its ack (e.g. replayed after a reconnect):
    // adopt the pending bubble rather than show the message twice.
    for (const [ref, pending] of view.byRef) {
      if (pending.dataset.seq === undefined && pending._body === frame.body) {
        li = pending;
        pending.dataset.seq = String(frame.seq);
        setMessageState(pending, "sent");
        view.byRef.delete(ref);
        break;
      }
    }
  }
  li ??= messageElement(view, { ...frame, state: "sent" });
  showAttachments(session, li, frame.attachments);
  view.bySeq.set(frame.seq, li);
  view.oldest = view.oldest === null ? frame.seq : Math.min(view.oldest, frame.seq);
  view.newest = Math.max(view.newest, frame.seq);
  const stick = view === current && view.stick;
  insertSorted(view, li, frame.seq);
  paintMessage(view, frame.seq);
  if (fromHistory) return;
  // A live (or recovered) message.
  if (view.typing.delete(frame.user.id) && view === current) renderTyping();
  // Not unread when it arrives on screen (the `read` frame follows shortly).
  const seen = view === current && stick && document.visibilityState === "visible";
  if (!own && !seen && frame.seq > view.readSeq && frame.seq > view.countedUpto) view.unread += 1;
  view.countedUpto = Math.max(view.countedUpto, frame.seq);
  if (view === current) {
    if (stick) scrollToBottom();
    else if (!own) $.jump.hidden = false;
  }
  renderRoomList();
  markReadSoon(view);
}

function onMessage(frame) {
  const view = rooms.get(frame.room);
  if (view) addMessage(view, frame);
}

function sendCurrent() {
  const view = current;
  if (!view || !conn || view.info.archived) return;
  const body = $.input.value.replace(/^\s*\n|\s+$/g, "");
  const upload = files.state(view.name);
  if (upload.uploading) {
    notice("Wait until the files have finished uploading, then send.", "warn");
    return;
  }
  if (!body.trim() && !upload.ready.length) return;
  const max = maxBody();
  const length = bodyLength(body);
  if (length > max) {
    notice(`That message is too long: ${length.toLocaleString()} characters, and the limit is ${max.toLocaleString()}.`, "danger");
    return;
  }
  const reply = replyTarget?.room === view.name ? replyTarget : null;
  const ref = conn.send(view.name, body, { replyTo: reply?.seq ?? null, attachments: files.take(view.name) });
  addPendingBubble(view, ref, body, reply);
  cancelReply();
  mentions.close();
  $.input.value = "";
  updateCharCount();
  lastTypingSent = 0;
  scrollToBottom();
}

/** Show our own message, not yet acknowledged, at the end of the room. */
function addPendingBubble(view, ref, body, reply = null) {
  if (view.byRef.has(ref)) return;
  const li = messageElement(view, { ref, user: me, body, ts: new Date().toISOString(), state: "pending", reply_to: reply });
  li._body = body;
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
  view.newest = Math.max(view.newest, ack.seq);
  const state = stateOf(view, ack.seq);
  if (!state.known) {
    state.fromMessage({ body: li._body ?? "" });
    state.user = me;
  }
  insertSorted(view, li, ack.seq);
  paintMessage(view, ack.seq);
  markReadSoon(view);
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
        const ref = conn.send(failure.room, failure.body, { replyTo: failure.reply_to ?? null, attachments: failure.attachments ?? [] });
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

// --- replies, edits, deletes, reactions -------------------------------------------------

/** An `edited`, `deleted` or `reaction` frame (live, or replayed after a reconnect). */
function onChange(frame, apply) {
  const view = rooms.get(frame.room);
  if (!view) return;
  const changed = apply(stateOf(view, frame.seq));
  if (changed) paintMessage(view, frame.seq);
  const li = view.bySeq.get(frame.seq);
  if (li && frame.ref && frame.ref === li._changeRef) setMessageState(li, li.dataset.state); // confirmed
  // Quotes of it in replies show its text now (as history would).
  const quotes = view.list.querySelectorAll(`.msg-reply[data-reply-seq="${Number(frame.seq)}"] .msg-reply-excerpt`);
  if (frame.type === "edited" && changed) for (const quote of quotes) setText(quote, excerptOf(frame.body, 100));
  if (frame.type === "deleted") {
    for (const quote of quotes) setText(quote, "message deleted");
    if (replyTarget?.room === view.name && replyTarget.seq === frame.seq) cancelReply();
    const editor = li?.querySelector(".msg-editor");
    if (editor) {
      editor.remove();
      li.querySelector(".msg-body").hidden = false;
    }
  }
}

function startReply(li) {
  const view = rooms.get(li.dataset.room);
  const seq = Number(li.dataset.seq);
  const state = view?.states.get(seq);
  if (!view || !state || state.deleted || view.info.archived) return;
  replyTarget = { room: view.name, seq, user: state.user ?? null, excerpt: excerptOf(state.body) };
  setText($.replyLabel, `Replying to ${displayName(state.user)}:`);
  setText($.replyExcerpt, replyTarget.excerpt);
  $.replyBar.hidden = false;
  $.input.focus();
}

function cancelReply() {
  replyTarget = null;
  $.replyBar.hidden = true;
  setText($.replyLabel, "");
  setText($.replyExcerpt, "");
}

/** Edit our own message in place: Enter saves, Escape cancels. */
function startEdit(li) {
  const view = rooms.get(li.dataset.room);
  const seq = Number(li.dataset.seq);
  const state = view?.states.get(seq);
  if (!view || !state || state.deleted || li.querySelector(".msg-editor")) return;
  const body = li.querySelector(".msg-body");
  const input = h("textarea", { class: "edit-input", value: state.body, attrs: { "aria-label": "Edit your message", rows: "2" } });
  const close = () => {
    editor.remove();
    body.hidden = false;
  };
  const save = () => {
    const text = input.value.replace(/^\s*\n|\s+$/g, "");
    if (!text.trim()) {
      showMessageError(li, "A message cannot be empty: delete it instead.");
      return;
    }
    if (bodyLength(text) > maxBody()) {
      showMessageError(li, `Too long: the limit is ${maxBody().toLocaleString()} characters.`);
      return;
    }
    if (text === state.body) return close();
    if (requestChange(li, { type: "edit", body: text }, "Saving…")) close();
  };
  const editor = h(
    "form",
    { class: "msg-editor", on: { submit: (event) => { event.preventDefault(); save(); } } },
    input,
    h(
      "div",
      { class: "msg-editor-actions" },
      h("button", { type: "button", class: "btn subtle small", text: "Cancel", on: { click: close } }),
      h("button", { type: "submit", class: "btn primary small edit-save", text: "Save" }),
    ),
  );
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      save();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      close();
    }
  });
  body.hidden = true;
  body.after(editor);
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

function toggleReaction(li, emoji) {
  const view = rooms.get(li.dataset.room);
  const state = view?.states.get(Number(li.dataset.seq));
  if (!state || state.deleted) return;
  const mine = Boolean(me && state.reactions.get(emoji)?.users.includes(me.name));
  requestChange(li, { type: "react", emoji, on: !mine });
}

/**
 * Ask the server to edit, delete or react to message `li`; its `edited`, `deleted` or
 * `reaction` frame (with our ref) confirms it, an `error` with our ref is shown on it.
 */
function requestChange(li, change, pendingText = "") {
  const view = rooms.get(li.dataset.room);
  const seq = Number(li.dataset.seq);
  if (!view || !seq) return false;
  const ref = conn?.request({ ...change, room: view.name, seq }) ?? null;
  if (!ref) {
    showMessageError(li, "You are offline: try again once the connection is back.");
    return false;
  }
  li._changeRef = ref;
  li.classList.remove("change-failed");
  setMessageState(li, li.dataset.state, pendingText);
  return true;
}

function showMessageError(li, text) {
  li.classList.add("change-failed");
  setMessageState(li, li.dataset.state, text);
  clearTimeout(li._errorTimer);
  li._errorTimer = setTimeout(() => {
    li.classList.remove("change-failed");
    if (li.querySelector(".msg-status").textContent === text) setMessageState(li, li.dataset.state);
  }, 10_000);
}

/** Show message `seq` of the current room, loading older history until it is there. */
async function jumpToSeq(seq) {
  const view = current;
  if (!view || !seq) return;
  for (let i = 0; i < JUMP_PAGES * 4 && !view.bySeq.has(seq); i += 1) {
    if (view !== current || view.historyDone || (view.oldest !== null && view.oldest <= seq)) break;
    if (view.loading || !view.initialLoaded) await new Promise((r) => setTimeout(r, 150));
    else await loadOlder(view);
  }
  const li = view.bySeq.get(seq);
  if (!li) {
    if (view === current) notice("That message is not in this room any more.", "warn");
    return;
  }
  li.scrollIntoView({ block: "center" });
  view.stick = isAtBottom();
  li.classList.add("highlight");
  setTimeout(() => li.classList.remove("highlight"), 2500);
}

// --- read state ------------------------------------------------------------------------------

/** Send `read` for the room soon (at most one frame per READ_EVERY per room). */
function markReadSoon(view) {
  if (view.readTimer) return;
  const wait = Math.max(0, view.readSent + READ_EVERY - Date.now());
  view.readTimer = setTimeout(() => {
    view.readTimer = null;
    markRead(view);
  }, wait);
}

/**
 * Ms between tries of the WebSocket while on the HTTP fallback: 30 s, or the setting
 * `chat.ws_probe_seconds` in localStorage (1 to 600), for networks that come and go.
 */
function wsProbeInterval() {
  let seconds = NaN;
  try {
    seconds = Number.parseFloat(localStorage.getItem("chat.ws_probe_seconds") ?? "");
  } catch {
    /* storage disabled */
  }
  return Number.isFinite(seconds) ? Math.min(600, Math.max(1, seconds)) * 1000 : 30_000;
}

/** The newest message is on screen in a visible tab: move the read cursor to it. */
function markRead(view) {
  if (view !== current || document.visibilityState !== "visible" || !view.joined || !view.initialLoaded) return;
  if (!conn?.online || !isAtBottom()) return;
  if (view.newest > view.readSeq) {
    view.readSeq = view.newest;
    view.readSent = Date.now();
    conn.sendFrame({ type: "read", room: view.name, seq: view.newest });
  }
  if (view.unread) {
    view.unread = 0;
    renderRoomList();
  }
}

/** Our read cursor moved in another tab. */
function onRead(frame) {
  const view = rooms.get(frame.room);
  if (!view || frame.seq <= view.readSeq) return;
  view.readSeq = frame.seq;
  const covered = view.initialLoaded && (view.historyDone || (view.oldest !== null && view.oldest <= frame.seq + 1));
  if (view.joined && covered) {
    let n = 0;
    for (const [seq, li] of view.bySeq) if (seq > frame.seq && li.dataset.author !== String(me?.id)) n += 1;
    view.unread = n;
    renderRoomList();
  } else {
    view.trustServer = true;
    loadRoomsSoon();
  }
}

// --- rooms changing: settings, removal, DMs, profile ----------------------------------------

/** A `room` frame: the topic or the archived flag changed. */
function onRoomFrame(frame) {
  const view = rooms.get(frame.room);
  if (!view) return;
  view.info = { ...view.info, topic: frame.topic ?? null, archived: Boolean(frame.archived) };
  if (view === current) renderRoomHeader();
  renderRoomList();
  if (settings.view === view) settings.render();
}

/** We left, or were removed from, a room: it stops here and now. */
function dropRoom(room, words) {
  const view = rooms.get(room);
  if (!view) return;
  conn?.forget(room);
  rooms.delete(room);
  if (settings.view === view) byId("settings").close();
  notice(words, "warn");
  if (current === view) {
    const next = [...rooms.keys()].sort((a, b) => a.localeCompare(b))[0];
    if (next) selectRoom(next);
    else showNoRoom();
  }
  renderRoomList();
  loadRoomsSoon(); // a public room comes back, to be joined again when opened
}

/** Open (or create) the direct-message room with `username` and show it. */
async function startDm(username) {
  let info;
  try {
    info = await session.api("/api/dms", { method: "POST", json: { username } });
  } catch (err) {
    throw new Error(couldNot(`start a conversation with ${username}`, err, { 404: `There is no user called “${username}”.` }));
  }
  let view = rooms.get(info.name);
  if (view) view.info = { ...view.info, ...info };
  else rooms.set(info.name, (view = new RoomView(info)));
  renderRoomList();
  selectRoom(info.name);
}

function renderMe() {
  if (!me) return;
  const shown = displayName(me);
  setText($.meName, shown);
  setText($.meAvatar, initials(shown));
  $.meAvatar.className = `avatar small ${hueClass(me.name)}`;
  $.profileBtn.setAttribute("aria-label", `Your profile: ${shown}`);
}

// --- notifications ---------------------------------------------------------------------------

/** A notification in the inbox (or the browser's) was clicked: open its room at its message. */
async function openNotification(item) {
  if (!item.room) {
    // An app notification may carry a link: http(s) or a path of this site, nothing else.
    let url = null;
    try {
      url = item.link ? new URL(item.link, location.origin) : null;
    } catch {
      url = null;
    }
    if (url && (url.protocol === "http:" || url.protocol === "https:")) window.open(url.href, "_blank", "noopener,noreferrer");
    return;
  }
  if (!rooms.has(item.room)) await loadRooms();
  if (!rooms.has(item.room)) {
    notice("That room is not available any more.", "warn");
    return;
  }
  selectRoom(item.room);
  if (item.seq) jumpToSeq(item.seq);
}

function onLiveNotification(frame, fresh) {
  if (!frame.room) return;
  const view = rooms.get(frame.room);
  if (!view) {
    loadRoomsSoon(); // e.g. the first message of a new DM
    return;
  }
  if (fresh && frame.kind === "mention") {
    view.mentions = (view.mentions ?? 0) + 1;
    renderRoomList();
  }
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
        h("span", { class: "person-name", text: displayName(user), title: user.name }),
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
  view.typing.set(frame.user.id, { name: displayName(frame.user), until: Date.now() + TYPING_SHOW });
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
  if (["edit", "delete", "react"].includes(op.type)) {
    // Shown on the message it was about, and as a toast in case it scrolled away.
    const li = rooms.get(op.room)?.bySeq.get(op.seq);
    const words = frameErrorWords(frame, { maxBody: maxBody() });
    if (li) showMessageError(li, words);
    notice(words, "danger");
    return;
  }
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
      setText(view.status, frame.code === "forbidden" ? "You are not a member of this private room." : "This room no longer exists, or you are not a member any more.");
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
