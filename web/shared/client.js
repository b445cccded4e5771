// client.js — the browser side of the chat protocol, shared by the chat UI (`/`)
// and the admin console (`/admin`). Plain ES module: no dependencies, no build step.
//
// Two pieces:
//
//   Session     HTTP: register, sign in, refresh, sign out, authenticated API calls.
//   Connection  One WebSocket to `/ws` that stays connected: authenticates with the
//               first frame, reconnects with jittered exponential backoff, re-auths
//               when the token is refreshed, rejoins its rooms with `since`, pages a
//               truncated replay with `after`, drops duplicate messages, and keeps an
//               outbound queue so nothing sent while offline is lost or doubled.
//               Where WebSockets are blocked it falls back to the event stream plus
//               REST send (stream-transport.js) and returns when it can.
//
// Token storage (a deliberate choice, documented in docs/protocol.md too):
//   * The access token lives only in memory (a JS field), never in storage, so a
//     script that can read storage still cannot replay it later, and it dies with
//     the page. It is refreshed shortly before it expires.
//   * The refresh token is kept in `sessionStorage` so a reload of the tab can
//     resume the session without asking for the password again. sessionStorage is
//     per tab and is cleared when the tab closes; it is never sent to the server
//     automatically (unlike a cookie), so it is not exposed to CSRF. Refresh tokens
//     rotate: every refresh replaces it, and signing out revokes it server-side.
//     A duplicated tab starts with a copy; whichever tab refreshes first keeps the
//     session and the other is asked to sign in again.
//
// Quick use:
//
//   import { Session, Connection } from "/static/shared/client.js";
//   const session = new Session();
//   const user = (await session.resume()) ?? (await session.signIn(name, password));
//   const conn = new Connection(session);
//   conn.on("state", (s) => console.log(s.state, s.retryAt));
//   conn.on("message", (m) => console.log(m.room, m.seq, m.user.name, m.body));
//   conn.on("ack", (a) => console.log("stored", a.ref, a.seq));
//   conn.start();
//   conn.join("general");
//   const ref = conn.send("general", "hello");   // queued until acked
//
// Every `on(type, fn)` returns a function that removes the listener.

import { StreamTransport } from "./stream-transport.js";

const REFRESH_KEY = "chat.refresh_token";

/** Close codes the server uses (see chat/protocol.py `CloseCode`). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006, // no close frame: network drop or server unreachable
  POLICY: 1008, // authentication failed
  TOO_BIG: 1009,
  INTERNAL: 1011,
  TOKEN_EXPIRED: 4001, // refresh the token and reconnect
  HEARTBEAT_TIMEOUT: 4002,
  REVOKED: 4003, // signed out, banned or revoked: sign in again
  SLOW_CONSUMER: 4008, // reconnect and resume with `since`
  TOO_MANY_CONNECTIONS: 4009,
  RATE_LIMITED: 4029,
});

// Send refusals that stored nothing and pass: the same ref goes again after `retry_after`.
const RETRY_LATER = new Set(["rate_limited", "overloaded", "unavailable"]);

/** Connection states, in the order a connection usually walks them. */
export const State = Object.freeze({
  IDLE: "idle", // not started
  CONNECTING: "connecting", // opening the socket / authenticating
  ONLINE: "online", // `hello` received
  WAITING: "waiting", // disconnected; the next attempt is at `retryAt`
  OFFLINE: "offline", // the browser says it has no network; retries when it has
  SIGNED_OUT: "signed-out", // the session is over: sign in again (no more retries)
  CLOSED: "closed", // stop() was called
});

/** How frames travel: a WebSocket, or the fallback (event stream + REST send). */
export const Transport = Object.freeze({ WEBSOCKET: "websocket", STREAM: "stream" });

// --- small utilities -----------------------------------------------------------

/** A fresh client-chosen `ref` for a frame. */
export function newRef() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A tiny event emitter: `on(type, fn)` returns an unsubscribe function. */
class Emitter {
  #handlers = new Map();

  on(type, fn) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(fn);
    return () => this.#handlers.get(type)?.delete(fn);
  }

  emit(type, payload) {
    for (const fn of [...(this.#handlers.get(type) ?? [])]) {
      try {
        fn(payload);
      } catch (err) {
        console.error(`chat client: a "${type}" listener failed`, err);
      }
    }
  }
}

/** An HTTP error answer: `status`, `detail` (plain words) and `retryAfter` seconds. */
export class ApiError extends Error {
  constructor(status, detail, retryAfter = null, code = null) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
    /** The error code of a `{code, detail}` answer (docs/protocol.md), or null. */
    this.code = code;
  }
}

/** The server could not be reached at all (network down, server restarting). */
export class NetworkError extends Error {
  constructor(message = "The server cannot be reached.") {
    super(message);
    this.name = "NetworkError";
  }
}

/** Turn a JSON `detail` (a string, or FastAPI's list of validation errors) into words. */
export function describeDetail(detail, fallback = "The request failed.") {
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail
      .map((d) => {
        const field = Array.isArray(d?.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
        const msg = typeof d?.msg === "string" ? d.msg : "is not valid";
        return field ? `${field}: ${msg}` : msg;
      })
      .join("; ");
  }
  return fallback;
}

const encoder = new TextEncoder();

function frameBytes(text) {
  // Cheap when every character is ASCII (the common case); exact otherwise.
  return /^[\x00-\x7f]*$/.test(text) ? text.length : encoder.encode(text).length;
}

/** A body's length as the server counts it (code points, not UTF-16 units). */
export function bodyLength(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// --- Session ---------------------------------------------------------------------

/**
 * Authentication and HTTP calls.
 *
 * Events (`session.on(type, fn)`):
 *   "token"      a new access token (string) was obtained (sign-in or refresh)
 *   "signedout"  {reason}: "signout" | "expired" | "revoked"; the tokens are gone
 */
export class Session extends Emitter {
  /**
   * @param {object} [options]
   * @param {string} [options.base]  URL prefix of the API ("" = same origin)
   * @param {Storage|null} [options.storage]  where the refresh token is kept
   *   (default sessionStorage; pass null to keep it in memory only)
   */
  constructor({ base = "", storage = globalThis.sessionStorage ?? null } = {}) {
    super();
    this.base = base;
    this.storage = storage;
    /** @type {{id:number, name:string, role:string}|null} the signed-in user */
    this.user = null;
    this._access = null;
    this._expiresAt = 0; // ms epoch
    this._ttl = 0; // seconds the current access token lives
    this._refreshing = null;
    this._timer = null;
  }

  /** True while an access token or a refresh token is held. */
  get signedIn() {
    return Boolean(this._access || this._refreshToken);
  }

  get _refreshToken() {
    try {
      return this.storage?.getItem(REFRESH_KEY) ?? this._memRefresh ?? null;
    } catch {
      return this._memRefresh ?? null;
    }
  }

  set _refreshToken(value) {
    this._memRefresh = value;
    try {
      if (value) this.storage?.setItem(REFRESH_KEY, value);
      else this.storage?.removeItem(REFRESH_KEY);
    } catch {
      /* storage disabled: memory only */
    }
  }

  /** Create an account. Resolves to `{id, username, role}`; does not sign in. */
  async register(username, password) {
    return this._call("/api/auth/register", { method: "POST", json: { username, password } });
  }

  /** Sign in with a password. Resolves to the user `{id, name, role}`. */
  async signIn(username, password) {
    const form = new URLSearchParams({ username, password, grant_type: "password" });
    const pair = await this._call("/api/auth/token", { method: "POST", form });
    this._store(pair);
    return this.loadUser();
  }

  /**
   * Resume after a reload with the refresh token kept in sessionStorage.
   * Resolves to the user, or null when there is nothing to resume (or it was
   * rejected). Throws NetworkError if the server cannot be reached, and ApiError
   * (429 or 5xx) if it is overloaded: the refresh token is kept for a retry.
   */
  async resume() {
    if (!this._refreshToken) return null;
    try {
      await this.refresh();
    } catch (err) {
      if (err instanceof ApiError && err.status < 500 && err.status !== 429) return null;
      throw err; // unreachable or overloaded: worth trying again later
    }
    return this.loadUser();
  }

  /** Fetch `/api/me` into `session.user` (`{id, name, role, display_name}`) and return it. */
  async loadUser() {
    const me = await this.api("/api/me");
    this.user = { id: me.id, name: me.username ?? me.name, role: me.role, display_name: me.display_name ?? null };
    return this.user;
  }

  /**
   * Exchange the refresh token for a new pair (only one refresh runs at a time).
   * Resolves to the new access token. An ApiError means the session is over
   * ("signedout" is emitted); a NetworkError leaves everything as it was.
   */
  refresh() {
    if (!this._refreshing) {
      this._refreshing = this._doRefresh().finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  async _doRefresh() {
    const refreshToken = this._refreshToken;
    if (!refreshToken) {
      this._end("expired");
      throw new ApiError(401, "You are not signed in.");
    }
    let pair;
    try {
      pair = await this._call("/api/auth/refresh", {
        method: "POST",
        json: { refresh_token: refreshToken },
      });
    } catch (err) {
      // Another tab (or a reload race) may have rotated the token meanwhile.
      if (err instanceof ApiError && err.status !== 429 && err.status < 500) {
        if (this._refreshToken === refreshToken) this._end("expired");
      }
      throw err;
    }
    this._store(pair);
    return pair.access_token;
  }

  /**
   * A valid access token, refreshed first if it expires within `minValidity`
   * seconds. Rejects with ApiError (signed out) or NetworkError.
   */
  async token({ minValidity = 30 } = {}) {
    // Never demand more than a quarter of the lifetime, so short-lived tokens still get used.
    const margin = Math.min(minValidity * 1000, this._ttl * 250);
    if (this._access && this._expiresAt - Date.now() > margin) return this._access;
    return this.refresh();
  }

  /** Milliseconds until the access token expires (0 when none). */
  get expiresIn() {
    return this._access ? Math.max(0, this._expiresAt - Date.now()) : 0;
  }

  /** Revoke the tokens on the server (best effort) and forget them. */
  async signOut() {
    const access = this._access;
    if (access) {
      try {
        await fetch(this.base + "/api/auth/logout", {
          method: "POST",
          headers: { Authorization: `Bearer ${access}` },
        });
      } catch {
        /* offline: the tokens are still forgotten locally */
      }
    }
    this._end("signout");
  }

  /** Forget the tokens because the server said the session is over (e.g. close 4003). */
  expire(reason = "revoked") {
    this._end(reason);
  }

  /**
   * An authenticated request. Resolves to the raw `Response` (any status), after
   * one refresh-and-retry on 401. Use for files (task results); use `api()` for JSON.
   * Options: method, json (body), form (URLSearchParams), query (object), headers, signal.
   */
  async fetch(path, options = {}) {
    let token = await this.token();
    let response = await this._raw(path, options, token);
    if (response.status === 401 && this._refreshToken) {
      token = await this.refresh();
      response = await this._raw(path, options, token);
    }
    return response;
  }

  /** An authenticated JSON call: resolves to the parsed body (null for 204); throws ApiError. */
  async api(path, options = {}) {
    return Session.parse(await this.fetch(path, options));
  }

  /** Parse a Response: JSON body on success, ApiError with plain `detail` otherwise. */
  static async parse(response) {
    let body = null;
    const text = await response.text();
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        body = null;
      }
    }
    if (response.ok) return body;
    const retry = Number.parseFloat(response.headers.get("Retry-After") ?? "");
    const fallback = `The server answered ${response.status} ${response.statusText}`.trim();
    throw new ApiError(
      response.status,
      describeDetail(body?.detail, fallback),
      Number.isFinite(retry) ? retry : null,
      typeof body?.code === "string" ? body.code : null,
    );
  }

  // internals

  async _call(path, options) {
    return Session.parse(await this._raw(path, options, null));
  }

  async _raw(path, { method = "GET", json, form, query, headers = {}, signal } = {}, token) {
    let url = this.base + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, v);
      const qs = params.toString();
      if (qs) url += (url.includes("?") ? "&" : "?") + qs;
    }
    const init = { method, headers: { Accept: "application/json", ...headers }, signal };
    if (token) init.headers.Authorization = `Bearer ${token}`;
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (form !== undefined) {
      init.body = form; // URLSearchParams sets its own Content-Type
    }
    try {
      return await fetch(url, init);
    } catch (err) {
      if (err?.name === "AbortError") throw err;
      throw new NetworkError();
    }
  }

  _store(pair) {
    this._access = pair.access_token;
    const ttl = Number(pair.expires_in) > 0 ? Number(pair.expires_in) : 300;
    // A JWT's `exp` is whole seconds, so the token may die up to a second sooner.
    this._ttl = Math.max(1, ttl - 1);
    this._expiresAt = Date.now() + this._ttl * 1000;
    if (pair.refresh_token) this._refreshToken = pair.refresh_token;
    this._schedule(this._ttl);
    this.emit("token", this._access);
  }

  _schedule(ttl) {
    clearTimeout(this._timer);
    // Refresh when three quarters of the lifetime have passed (at most a minute early).
    const lead = Math.min(60, ttl * 0.25);
    this._timer = setTimeout(() => this._background(), Math.max(0.5, ttl - lead) * 1000);
  }

  async _background() {
    if (!this._refreshToken) return;
    try {
      await this.refresh();
    } catch (err) {
      // Server unreachable: try again soon; an ApiError already signed us out.
      if (err instanceof NetworkError) {
        clearTimeout(this._timer);
        this._timer = setTimeout(() => this._background(), 10_000);
      }
    }
  }

  _end(reason) {
    const had = this.signedIn;
    clearTimeout(this._timer);
    this._access = null;
    this._expiresAt = 0;
    this._refreshToken = null;
    this.user = null;
    if (had) this.emit("signedout", { reason });
  }
}

// --- Connection --------------------------------------------------------------------

/**
 * One WebSocket to `/ws` that stays connected while started.
 *
 * When the WebSocket cannot be opened (`fallbackAfter` attempts in a row end before
 * `hello`, e.g. a proxy refuses the upgrade), it falls back to the event stream plus
 * REST send (stream-transport.js), tries the WebSocket again every `wsProbeInterval`
 * ms, and returns to it once it opens; rejoining with `since`/`changes_after`, so
 * nothing is lost or doubled. `conn.transport` says which one is in use.
 *
 * Events (`conn.on(type, fn)`):
 *   "state"      {state, transport, attempt, retryAt, code, reason}: see `State`, `Transport`
 *   "hello"      the hello frame ({user, expires_at, limits}); also `conn.user`, `conn.limits`
 *   "joined"     joined frame (on every (re)join); {room, presence, last_seq, replay_truncated,
 *                changes_version}
 *   "message"    a message frame, each (room, seq) delivered once, including missed
 *                messages recovered after a reconnect (which may arrive after newer live
 *                ones: order by `seq`)
 *   "ack"        {ref, room, id, seq, ts}: a queued send was stored; it leaves the queue
 *   "sendfailed" {ref, room, body, reply_to, code, detail}: the server refused a send for good
 *   "error"      an error frame, plus `op` ({type, room, body, seq}) when its ref is known
 *   "presence", "typing", "left", "reauthed", "pong", "task", "alert", "edited",
 *   "deleted", "reaction", "read", "notification", "room", "removed": those frames
 *   "frame"      every server frame, before the specific event
 *   "queue"      the outbound queue changed (see `pending()`)
 */
export class Connection extends Emitter {
  /**
   * @param {Session} session
   * @param {object} [options]
   * @param {string} [options.url]  defaults to ws(s)://<this host>/ws
   * @param {number} [options.baseDelay]  first reconnect delay in ms (500)
   * @param {number} [options.maxDelay]   longest reconnect delay in ms (30000)
   * @param {number} [options.pingInterval]  ms between heartbeats (20000)
   * @param {number} [options.pongTimeout]   ms without any frame before giving up (10000)
   * @param {string} [options.outboxKey]  when set, unacknowledged messages are also kept in
   *   sessionStorage under this key (use one per user), so a reload of the tab sends them
   *   too, with their original refs; `pending()` lists them after construction
   * @param {Storage|null} [options.storage]  where the outbox is kept (sessionStorage)
   * @param {number} [options.fallbackAfter]  WebSocket attempts that fail before `hello`
   *   in a row before falling back to the event stream (2; 0 = never)
   * @param {number} [options.wsProbeInterval]  ms between tries of the WebSocket while on
   *   the fallback (30000)
   */
  constructor(session, options = {}) {
    super();
    const loc = globalThis.location;
    this.session = session;
    this.url = options.url ?? `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/ws`;
    this.baseDelay = options.baseDelay ?? 500;
    this.maxDelay = options.maxDelay ?? 30_000;
    this.pingInterval = options.pingInterval ?? 20_000;
    this.pongTimeout = options.pongTimeout ?? 10_000;
    /** @type {{id:number, name:string, role:string}|null} from hello */
    this.user = null;
    /** limits announced in hello (e.g. max_body_chars) */
    this.limits = {};

    this.state = State.IDLE;
    this._info = { state: State.IDLE, attempt: 0, retryAt: null, code: null, reason: "" };
    this._ws = null;
    this._epoch = 0; // increments per socket, so late callbacks of old sockets are ignored
    this._authed = false;
    this._attempt = 0;
    this._retryTimer = null;
    this._pingTimer = null;
    this._deadTimer = null;
    this._authFailures = 0;
    this._rooms = new Map(); // room -> {mark, above:Set, joinedEpoch}
    this._outbox = []; // {ref, room, body, sentEpoch}
    this._outboxPausedUntil = 0;
    this._outboxTimer = null;
    this._ops = new Map(); // ref -> {type, room, body}
    this._storage = options.storage === undefined ? (globalThis.sessionStorage ?? null) : options.storage;
    this._outboxKey = options.outboxKey ?? null;
    this._loadOutbox();
    this.fallbackAfter = options.fallbackAfter ?? 2;
    this.wsProbeInterval = options.wsProbeInterval ?? 30_000;
    /** Which transport is in use (see `Transport`). */
    this.transport = Transport.WEBSOCKET;
    this._wsFailures = 0; // WebSocket attempts in a row that ended before `hello`
    this._stream = new StreamTransport(this);
    this._probe = null; // the background WebSocket try while on the fallback
    this._probeTimer = null;
    this._reopenQueued = false;
    this._probeSoon = false;

    this._offSession = [
      session.on("token", (token) => this._reauth(token)),
      session.on("signedout", () => this._signedOut()),
    ];
    this._onOnline = () => {
      if (this.state === State.OFFLINE || this.state === State.WAITING) this._connect();
    };
    this._onOffline = () => {
      if (this.state === State.WAITING) {
        clearTimeout(this._retryTimer);
        this._setState(State.OFFLINE, { retryAt: null });
      }
    };
  }

  /** Connect, and keep reconnecting until stop() or the session ends. */
  start() {
    if (this.state !== State.IDLE && this.state !== State.CLOSED) return;
    globalThis.addEventListener?.("online", this._onOnline);
    globalThis.addEventListener?.("offline", this._onOffline);
    this._connect();
  }

  /** Close the socket and stop reconnecting. Queued sends stay queued (see `pending()`). */
  stop() {
    this._stopProbe();
    this._teardown(1000, "client closing");
    this._setState(State.CLOSED, { retryAt: null });
  }

  /** Skip the wait and reconnect now (e.g. a "Retry now" button). */
  retryNow() {
    if (this.state === State.WAITING || this.state === State.OFFLINE) this._connect();
  }

  /** Forget everything (rooms, queue) and remove listeners; for signing out. */
  dispose() {
    this.stop();
    this._rooms.clear();
    this._outbox = [];
    this._saveOutbox();
    this._offSession.forEach((off) => off());
    globalThis.removeEventListener?.("online", this._onOnline);
    globalThis.removeEventListener?.("offline", this._onOffline);
  }

  /** True when authenticated and able to send now. */
  get online() {
    return this.state === State.ONLINE;
  }

  /**
   * Join a room now and after every reconnect. Rejoins ask for `since` = the last
   * seq seen, so only missed messages are replayed (the first join replays none:
   * load history over HTTP), and `changes_after` = the version up to which every change
   * has arrived (`changes_checked`), so every edit, deletion and reaction missed
   * meanwhile is resent (those seen already again: the views keep the newer version).
   */
  join(room) {
    const known = this._rooms.has(room);
    if (!known) this._rooms.set(room, { mark: null, above: new Set(), joinedEpoch: -1, changeVersion: null });
    if (this._onStream) {
      if (!known && this._authed) this._reopenStream();
    } else if (this._authed) this._sendJoin(room);
  }

  /** Leave a room and stop rejoining it. */
  leave(room) {
    if (!this._rooms.delete(room)) return;
    if (this._onStream) {
      if (this._authed) this._reopenStream();
      this.emit("left", { type: "left", room });
    } else if (this._authed) this._transmit({ type: "leave", room, ref: this._op("leave", room) });
  }

  /** Rooms this connection keeps joined. */
  get rooms() {
    return [...this._rooms.keys()];
  }

  /** True once `joined` was received for the room on the current socket. */
  isJoined(room) {
    return this._rooms.get(room)?.joinedEpoch === this._epoch && this._authed;
  }

  /** The newest seq of a room up to which every message has been delivered (or null). */
  lastSeq(room) {
    return this._rooms.get(room)?.mark ?? null;
  }

  /**
   * Queue a message and send it as soon as the room is joined; returns its `ref`.
   * It is resent with the same ref after a reconnect until its `ack` arrives, and
   * the server stores a ref once, so it can neither be lost nor doubled.
   */
  send(room, body, { ref = newRef(), replyTo = null, attachments = [] } = {}) {
    if (!this._rooms.has(room)) this.join(room);
    this._outbox.push({ ref, room, body, reply_to: replyTo ?? null, attachments, sentEpoch: -1 });
    this._saveOutbox();
    this.emit("queue", this.pending());
    // Later in this task, so the caller can render the message before any event about it.
    queueMicrotask(() => this._flush());
    return ref;
  }

  /** Drop a queued (not yet acknowledged) message. Returns true if it was queued. */
  discard(ref) {
    const before = this._outbox.length;
    this._outbox = this._outbox.filter((item) => item.ref !== ref);
    if (this._outbox.length === before) return false;
    this._saveOutbox();
    this.emit("queue", this.pending());
    return true;
  }

  /** Messages not yet acknowledged: [{ref, room, body, reply_to}]. */
  pending(room = null) {
    return this._outbox
      .filter((item) => room === null || item.room === room)
      .map(({ ref, room: r, body, reply_to }) => ({ ref, room: r, body, reply_to: reply_to ?? null }));
  }

  /**
   * Send a one-off request about a message (`edit`, `delete`, `react`) or the read
   * cursor (`read`) now, with a fresh `ref` so a refusal comes back as an "error"
   * event carrying `op` ({type, room, seq}). Nothing is queued: returns the ref, or
   * null when not connected (say so to the person; a stale edit must not land later).
   */
  request(frame) {
    if (!this._authed) return null;
    const ref = newRef();
    this._ops.set(ref, { type: frame.type, room: frame.room, seq: frame.seq });
    if (!this._transmit({ ...frame, ref })) {
      this._ops.delete(ref);
      return null;
    }
    return ref;
  }

  /** Stop rejoining a room without telling the server (it already removed us). */
  forget(room) {
    this._rooms.delete(room);
  }

  /** Tell the room you are typing (best effort: dropped when not connected). */
  typing(room) {
    if (this.isJoined(room)) this._transmit({ type: "typing", room });
  }

  /** Send any frame now if authenticated (returns false otherwise). */
  sendFrame(frame) {
    if (!this._authed) return false;
    return this._transmit(frame);
  }

  // --- connecting --------------------------------------------------------------------

  async _connect() {
    clearTimeout(this._retryTimer);
    this._teardown(1000, "reconnecting");
    const epoch = ++this._epoch;
    this._setState(State.CONNECTING, { retryAt: null });
    let token;
    try {
      token = await this.session.token();
    } catch (err) {
      if (epoch !== this._epoch) return;
      if (err instanceof ApiError && err.status !== 429 && err.status < 500) {
        this._signedOut();
        return;
      }
      this._retry({ code: null, reason: "The server cannot be reached." });
      return;
    }
    if (epoch !== this._epoch || this.state !== State.CONNECTING) return;
    if (this._onStream) {
      this._stream.open(epoch);
      return;
    }
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._retry({ code: null, reason: String(err?.message ?? err) });
      return;
    }
    this._ws = ws;
    this._armDeadTimer(); // a handshake that hangs (a dead network) counts as a failure
    ws.onopen = () => {
      if (epoch !== this._epoch) return;
      ws.send(JSON.stringify({ type: "auth", token }));
      this._armDeadTimer();
    };
    ws.onmessage = (event) => {
      if (epoch !== this._epoch) return;
      this._armPing();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame && typeof frame === "object") this._dispatch(frame);
    };
    ws.onclose = (event) => {
      if (epoch !== this._epoch) return;
      this._closed(event.code, event.reason);
    };
    ws.onerror = () => {
      /* always followed by close */
    };
  }

  _closed(code, reason) {
    const wasAuthed = this._authed;
    const wasSocket = Boolean(this._ws);
    this._teardown();
    if (this.state === State.CLOSED || this.state === State.SIGNED_OUT) return;
    if (wasSocket && !wasAuthed && (code === CloseCode.ABNORMAL || code === CloseCode.HEARTBEAT_TIMEOUT)) {
      // Refused (a proxy's 403 is 1006 here), cut or silent before `hello`, with no word
      // from the server: after `fallbackAfter` in a row, try the stream.
      this._wsFailures += 1;
      if (this.fallbackAfter > 0 && this._wsFailures >= this.fallbackAfter) {
        this._useTransport(Transport.STREAM);
        this._retry({ code, reason, delay: 0 });
        return;
      }
    }
    if (code === CloseCode.REVOKED) {
      this.session.expire("revoked");
      this._signedOut();
      return;
    }
    if (code === CloseCode.POLICY && !wasAuthed) {
      // The token was refused: refresh it and try again; twice in a row means signed out.
      this._authFailures += 1;
      if (this._authFailures >= 2) {
        this.session.expire("expired");
        this._signedOut();
        return;
      }
      this._refreshAndRetry(code, reason);
      return;
    }
    if (code === CloseCode.TOKEN_EXPIRED) {
      this._refreshAndRetry(code, reason);
      return;
    }
    let minDelay = 0;
    if (code === CloseCode.TOO_MANY_CONNECTIONS || code === CloseCode.RATE_LIMITED) minDelay = 5000;
    this._retry({ code, reason, minDelay });
  }

  // A fresh token, then reconnect at once; a network failure retries with backoff.
  _refreshAndRetry(code, reason) {
    this.session
      .refresh()
      .then(() => this._retry({ code, reason, delay: 0 }))
      .catch((err) => {
        if (err instanceof NetworkError) this._retry({ code, reason });
        else this._signedOut();
      });
  }

  _retry({ code = null, reason = "", delay = null, minDelay = 0 }) {
    if (this.state === State.CLOSED || this.state === State.SIGNED_OUT) return;
    clearTimeout(this._retryTimer);
    if (globalThis.navigator?.onLine === false) {
      this._setState(State.OFFLINE, { code, reason, retryAt: null });
      return;
    }
    if (delay === null) {
      // "Equal jitter": half the exponential step fixed, half random, capped.
      const step = Math.min(this.maxDelay, this.baseDelay * 2 ** this._attempt);
      delay = Math.max(minDelay, step / 2 + Math.random() * (step / 2));
      this._attempt += 1;
    }
    const retryAt = Date.now() + delay;
    this._setState(State.WAITING, { code, reason, retryAt, attempt: this._attempt });
    this._retryTimer = setTimeout(() => this._connect(), delay);
  }

  _teardown(code = 1000, reason = "") {
    this._stream.close();
    clearTimeout(this._pingTimer);
    clearTimeout(this._deadTimer);
    clearTimeout(this._outboxTimer);
    this._authed = false;
    this._ops.clear();
    for (const item of this._outbox) item.sentEpoch = -1;
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) {
        try {
          ws.close(code, reason);
        } catch {
          /* already closing */
        }
      }
    }
  }

  _signedOut() {
    clearTimeout(this._retryTimer);
    this._stopProbe();
    this._teardown(1000, "signed out");
    if (this.state !== State.CLOSED) this._setState(State.SIGNED_OUT, { retryAt: null });
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._info = { ...this._info, ...extra, state, attempt: this._attempt, transport: this.transport };
    this.emit("state", { ...this._info });
  }

  _reauth(token) {
    if (this._authed && this._ws) this._transmit({ type: "auth", token, ref: this._op("auth") });
  }

  // --- the fallback: event stream + REST send (stream-transport.js) -------------------

  get _onStream() {
    return this.transport === Transport.STREAM;
  }

  _useTransport(transport) {
    if (this.transport === transport) return;
    this.transport = transport;
    this._wsFailures = 0;
    // Once the stream works, try the socket at once: it may only have met a restart.
    this._probeSoon = transport === Transport.STREAM;
    if (transport === Transport.STREAM) this._scheduleProbe();
    else this._stopProbe();
  }

  /** The rooms changed while on the stream: reopen it (once per task) from its cursor. */
  _reopenStream() {
    if (this._reopenQueued) return;
    this._reopenQueued = true;
    queueMicrotask(() => {
      this._reopenQueued = false;
      if (this._onStream && this._authed) this._connect();
    });
  }

  /** No ticket for the stream. Unreachable: not a WebSocket problem, so back to the socket. */
  _streamFailed(err) {
    if (err instanceof ApiError && err.status !== 429 && err.status < 500) {
      this._signedOut();
      return;
    }
    if (err instanceof NetworkError) this._useTransport(Transport.WEBSOCKET);
    this._retry({ code: null, reason: err.message, minDelay: (err.retryAfter ?? 0) * 1000 });
  }

  _scheduleProbe() {
    clearTimeout(this._probeTimer);
    this._probeTimer = setTimeout(() => this._probeSocket(), this.wsProbeInterval);
  }

  _stopProbe() {
    clearTimeout(this._probeTimer);
    const probe = this._probe;
    this._probe = null;
    if (probe) {
      probe.onopen = probe.onmessage = probe.onclose = null;
      try {
        probe.close(1000, "probe");
      } catch {
        /* already closed */
      }
    }
  }

  /** Try the WebSocket on the side; once it says `hello`, switch back to it. */
  async _probeSocket() {
    if (!this._onStream || this._probe) return;
    let token;
    try {
      token = await this.session.token();
      if (!this._onStream) return;
      this._probe = new WebSocket(this.url);
    } catch {
      this._scheduleProbe();
      return;
    }
    const probe = this._probe;
    probe.onopen = () => probe.send(JSON.stringify({ type: "auth", token }));
    probe.onmessage = (event) => {
      let frame = null;
      try {
        frame = JSON.parse(event.data);
      } catch {
        /* not a frame */
      }
      if (frame?.type !== "hello") return;
      this._stopProbe();
      this._useTransport(Transport.WEBSOCKET);
      this._connect(); // rejoins with `since` and `changes_after`: nothing lost or doubled
    };
    probe.onclose = () => {
      if (this._probe !== probe) return;
      this._probe = null;
      this._scheduleProbe();
    };
  }

  // --- heartbeat ---------------------------------------------------------------------

  _armPing() {
    clearTimeout(this._deadTimer);
    clearTimeout(this._pingTimer);
    if (!this._ws) return;
    this._pingTimer = setTimeout(() => {
      if (this._transmit({ type: "ping" })) this._armDeadTimer();
    }, this.pingInterval);
  }

  _armDeadTimer() {
    clearTimeout(this._deadTimer);
    const epoch = this._epoch;
    this._deadTimer = setTimeout(() => {
      if (epoch !== this._epoch) return;
      this._closed(CloseCode.HEARTBEAT_TIMEOUT, "The server stopped answering.");
    }, this.pongTimeout);
  }

  // --- frames -------------------------------------------------------------------------

  _transmit(frame) {
    if (this._onStream) return this._authed && this._stream.request(frame);
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  _op(type, room, body) {
    const ref = newRef();
    this._ops.set(ref, { type, room, body });
    return ref;
  }

  _sendJoin(room) {
    const tracker = this._rooms.get(room);
    const frame = { type: "join", room, ref: this._op("join", room) };
    if (tracker?.mark !== null && tracker?.mark !== undefined) frame.since = tracker.mark;
    tracker.sinceSent = frame.since ?? null;
    // Only with `since`: the changes resent are those to the messages up to it.
    if (frame.since !== undefined && Number.isInteger(tracker.changeVersion)) frame.changes_after = tracker.changeVersion;
    this._transmit(frame);
  }

  _dispatch(frame) {
    if (frame.ref && frame.type !== "error") this._ops.delete(frame.ref);
    this.emit("frame", frame);
    switch (frame.type) {
      case "hello":
        this._authed = true;
        this._attempt = 0;
        this._authFailures = 0;
        this.user = frame.user ?? null;
        this.limits = frame.limits ?? {};
        if (!this._onStream) {
          this._wsFailures = 0;
          this._stream.reset(); // the socket resumes per room with `since` from here
        }
        this._setState(State.ONLINE, { code: null, reason: "", retryAt: null });
        this.emit("hello", frame);
        // On the stream, its `joined` frames follow by themselves (reopen for rooms joined
        // while it was opening).
        if (!this._onStream) for (const room of this._rooms.keys()) this._sendJoin(room);
        else if (this._stream.missesRooms()) this._reopenStream();
        if (this._onStream && this._probeSoon) {
          this._probeSoon = false;
          this._probeSocket();
        }
        return;
      case "joined":
        this._joined(frame);
        return;
      case "message":
        this._deliver(frame);
        return;
      case "ack":
        this._ack(frame);
        return;
      case "error":
        this._error(frame);
        return;
      case "left":
        if (frame.ref) this._ops.delete(frame.ref);
        this.emit("left", frame);
        return;
      case "removed":
        // Removed from the room (or left it in another tab): nothing more comes from it.
        this._rooms.delete(frame.room);
        this.emit("removed", frame);
        return;
      case "changes_checked":
        this._changesReached(frame.room, frame.version);
        return;
      default:
        this.emit(frame.type, frame);
    }
  }

  /**
   * Remember the version up to which every change of the room has reached us (from
   * `joined` and `changes_checked`), for the next rejoin's `changes_after`. Not the
   * highest version seen in change frames: an event can overtake an earlier one that is
   * still on its way, and a rejoin after the later one would skip the earlier one.
   */
  _changesReached(room, version) {
    const tracker = this._rooms.get(room);
    if (!tracker || !Number.isInteger(version)) return;
    tracker.changeVersion = Math.max(tracker.changeVersion ?? 0, version);
  }

  _joined(frame) {
    if (frame.ref) this._ops.delete(frame.ref);
    const tracker = this._rooms.get(frame.room);
    if (!tracker) return;
    tracker.joinedEpoch = this._epoch;
    // Every change up to it is in what this join sends (or, truncated, history shows).
    this._changesReached(frame.room, frame.changes_version);
    if (tracker.mark === null) {
      // First join: no replay was asked for; live messages start after last_seq.
      tracker.mark = frame.last_seq;
      for (const seq of tracker.above) if (seq <= tracker.mark) tracker.above.delete(seq);
    } else if (frame.replay_truncated) {
      const cap = Number(this.limits?.replay_cap) || 0;
      this._fillGap(frame.room, (tracker.sinceSent ?? tracker.mark) + cap, frame.last_seq, this._epoch);
    } else if (this._onStream && frame.last_seq > tracker.mark && !frame.resumed) {
      // A stream opened afresh (no cursor for this room yet) replays nothing: page the gap.
      this._fillGap(frame.room, tracker.mark, frame.last_seq, this._epoch);
    }
    this.emit("joined", frame);
    this._flush();
  }

  /** Page the part of a truncated replay that the server left out, with `after`. */
  async _fillGap(room, from, target, epoch) {
    let cursor = Math.max(from, this._rooms.get(room)?.mark ?? from);
    let failures = 0;
    while (cursor < target && epoch === this._epoch && this._rooms.has(room)) {
      try {
        const page = await this.session.api(`/api/rooms/${encodeURIComponent(room)}/messages`, {
          query: { after: cursor, limit: 100 },
        });
        const items = page?.items ?? [];
        if (epoch !== this._epoch) return;
        for (const item of items) this._deliver({ type: "message", room, ...item });
        if (items.length === 0) return;
        cursor = Math.max(cursor, ...items.map((m) => m.seq));
        failures = 0;
      } catch (err) {
        if (!(err instanceof NetworkError) || ++failures > 5) {
          this.emit("error", { type: "error", code: "resync_failed", detail: err.message, room });
          return;
        }
        await sleep(1000 * failures);
      }
    }
  }

  /** Deliver a message once per (room, seq), advancing the room's contiguous mark. */
  _deliver(frame) {
    const tracker = this._rooms.get(frame.room);
    if (tracker && typeof frame.seq === "number") {
      if (tracker.mark !== null && frame.seq <= tracker.mark) return;
      if (tracker.above.has(frame.seq)) return;
      if (tracker.mark === null) {
        tracker.above.add(frame.seq);
      } else {
        tracker.above.add(frame.seq);
        while (tracker.above.has(tracker.mark + 1)) {
          tracker.mark += 1;
          tracker.above.delete(tracker.mark);
        }
      }
    }
    this.emit("message", frame);
  }

  _ack(frame) {
    const index = this._outbox.findIndex((item) => item.ref === frame.ref);
    if (index >= 0) {
      this._outbox.splice(index, 1);
      this._saveOutbox();
      this.emit("queue", this.pending());
    }
    this.emit("ack", frame);
  }

  _error(frame) {
    const op = frame.ref ? this._ops.get(frame.ref) : undefined;
    if (op) this._ops.delete(frame.ref);
    const queued = frame.ref ? this._outbox.find((item) => item.ref === frame.ref) : undefined;
    const event = { ...frame };
    if (op) event.op = op;
    if (queued) {
      event.op = { type: "send", room: queued.room, body: queued.body, reply_to: queued.reply_to };
      if (RETRY_LATER.has(frame.code) || frame.code === "not_joined") {
        // Not refused for good: send it again (same ref) after the wait / rejoin.
        const wait = Math.max(0.5, Number(frame.retry_after) || 1) * 1000;
        this._outboxPausedUntil = Math.max(this._outboxPausedUntil, Date.now() + wait);
        for (const item of this._outbox) item.sentEpoch = -1;
        if (frame.code === "not_joined" && this._rooms.has(queued.room)) this._sendJoin(queued.room);
        this._flush();
      } else {
        this._outbox = this._outbox.filter((item) => item !== queued);
        this._saveOutbox();
        this.emit("queue", this.pending());
        this.emit("sendfailed", { ...queued, code: frame.code, detail: frame.detail });
      }
    }
    if (op?.type === "auth") {
      // The fresh token was refused on the open socket: reconnect, which refreshes first.
      this._closed(CloseCode.POLICY, frame.detail);
      return;
    }
    if (op?.type === "join" && frame.code === "rate_limited" && this._rooms.has(op.room)) {
      // Not refused for good (many rooms rejoined at once): join again after the wait.
      const epoch = this._epoch;
      const wait = Math.max(0.5, Number(frame.retry_after) || 1) * 1000;
      setTimeout(() => {
        if (this._epoch === epoch && this._rooms.has(op.room)) this._sendJoin(op.room);
      }, wait);
    }
    if (op?.type === "join" && (frame.code === "forbidden" || frame.code === "not_found")) {
      this._rooms.delete(op.room);
      const refused = this._outbox.filter((item) => item.room === op.room);
      if (refused.length) {
        this._outbox = this._outbox.filter((item) => item.room !== op.room);
        this._saveOutbox();
        this.emit("queue", this.pending());
        for (const item of refused) this.emit("sendfailed", { ...item, code: frame.code, detail: frame.detail });
      }
    }
    this.emit("error", event);
  }

  _loadOutbox() {
    if (!this._outboxKey || !this._storage) return;
    try {
      const saved = JSON.parse(this._storage.getItem(this._outboxKey) ?? "[]");
      for (const item of Array.isArray(saved) ? saved : []) {
        if (typeof item?.ref === "string" && typeof item.room === "string" && typeof item.body === "string") {
          const replyTo = Number.isInteger(item.reply_to) ? item.reply_to : null;
          this._outbox.push({ ref: item.ref, room: item.room, body: item.body, reply_to: replyTo, sentEpoch: -1 });
          if (!this._rooms.has(item.room)) this._rooms.set(item.room, { mark: null, above: new Set(), joinedEpoch: -1, changeVersion: null });
        }
      }
    } catch {
      /* unreadable: start empty */
    }
  }

  _saveOutbox() {
    if (!this._outboxKey || !this._storage) return;
    try {
      if (this._outbox.length === 0) this._storage.removeItem(this._outboxKey);
      else this._storage.setItem(this._outboxKey, JSON.stringify(this.pending()));
    } catch {
      /* full or disabled: the queue still lives in memory */
    }
  }

  /** Send every queued message whose room is joined, in order, unless paused. */
  _flush() {
    clearTimeout(this._outboxTimer);
    if (!this._authed) return;
    const wait = this._outboxPausedUntil - Date.now();
    if (wait > 0) {
      this._outboxTimer = setTimeout(() => this._flush(), wait);
      return;
    }
    const tooBig = [];
    for (const item of this._outbox) {
      if (item.sentEpoch === this._epoch || !this.isJoined(item.room)) continue;
      const send = { type: "send", room: item.room, body: item.body, ref: item.ref };
      if (item.reply_to) send.reply_to = item.reply_to;
      if (item.attachments?.length) send.attachments = item.attachments;
      const frame = JSON.stringify(send);
      // The server closes the socket (1009) on a frame over its limit; resending it after
      // the reconnect would loop forever, so refuse it here instead.
      if (frameBytes(frame) > (Number(this.limits.max_frame_bytes) || Infinity)) {
        tooBig.push(item);
        continue;
      }
      if (this._onStream) {
        item.sentEpoch = this._epoch;
        this._stream.send(item, this._epoch);
      } else if (this._ws?.readyState === WebSocket.OPEN) {
        this._ws.send(frame);
        item.sentEpoch = this._epoch;
      }
    }
    if (tooBig.length) {
      this._outbox = this._outbox.filter((item) => !tooBig.includes(item));
      this._saveOutbox();
      this.emit("queue", this.pending());
      for (const item of tooBig) {
        const detail = `the message is larger than the server accepts (${this.limits.max_frame_bytes} bytes)`;
        this.emit("sendfailed", { ...item, code: "too_large", detail });
      }
    }
  }
}
