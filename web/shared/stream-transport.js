// stream-transport.js — the Connection's fallback when a WebSocket cannot be opened
// (a proxy that blocks the upgrade): frames come from the event stream
// (`GET /api/stream`, Server-Sent Events) and sends go by REST (`POST
// /api/rooms/{room}/messages`). See docs/protocol.md, "Without a WebSocket".
//
// The stream carries the very frames a socket gets, so they go through the
// Connection's own `_dispatch` and the views never know the difference. The one-off
// frames (edit, delete, react, read, typing) go by their REST twins, whose answer is
// the same event a socket would get, dispatched with the frame's `ref`.
//
// The ticket that authorizes EventSource (it cannot send a header) is single-use and
// lives only in the URL of the one EventSource it opens; it is never stored.

import { ApiError, NetworkError } from "./client.js";

/** Every frame type the stream can carry (`event:` names; EventSource needs each one). */
const EVENT_TYPES = [
  "hello", "joined", "message", "edited", "deleted", "reaction", "changes_checked",
  "presence", "presence_changes", "typing", "read", "room", "removed", "notification",
  "notifications_read", "task", "alert",
];

/** The REST twin of a one-off frame: [method, path, json] (docs/protocol.md), or null. */
function restOf(frame) {
  const room = `/api/rooms/${encodeURIComponent(frame.room)}`;
  const message = `${room}/messages/${frame.seq}`;
  switch (frame.type) {
    case "edit":
      return ["PATCH", message, { body: frame.body }];
    case "delete":
      return ["DELETE", message, undefined];
    case "react":
      return [frame.on ? "PUT" : "DELETE", `${message}/reactions/${encodeURIComponent(frame.emoji)}`, undefined];
    case "read":
      return ["POST", `${room}/read`, { seq: frame.seq }];
    case "typing":
      return ["POST", `${room}/typing`, undefined];
    default:
      return null;
  }
}

export class StreamTransport {
  /** @param {import("./client.js").Connection} conn */
  constructor(conn) {
    this.conn = conn;
    this.source = null;
    /** The last `id:` received: resumes the stream with nothing lost or doubled. */
    this.cursor = null;
    this._known = new Set(); // rooms the cursor holds a position for (their `joined` came)
    this._resuming = new Set(); // rooms this stream resumes, replaying what was missed
    this._sending = Promise.resolve(); // REST sends go one after the other, in order
  }

  /** Open the stream for the connection's rooms (epoch: the Connection's attempt). */
  async open(epoch) {
    const conn = this.conn;
    this.rooms = [];
    let ticket;
    try {
      // With no rooms yet the stream still carries the user's own frames: notifications,
      // and for an admin console its tasks and alerts; a join reopens it with the room.
      ({ ticket } = await conn.session.api("/api/stream/ticket", { method: "POST" }));
    } catch (err) {
      if (epoch !== conn._epoch) return;
      conn._streamFailed(err);
      return;
    }
    if (epoch !== conn._epoch) return;
    const rooms = conn.rooms;
    this.rooms = rooms;
    const params = new URLSearchParams({ rooms: rooms.join(","), ticket });
    if (this.cursor) params.set("last_event_id", this.cursor);
    // The server keeps only the rooms asked for in the cursor.
    this._resuming = new Set(this.cursor ? rooms.filter((room) => this._known.has(room)) : []);
    this._known = new Set(this._resuming);
    const source = new EventSource(`${conn.session.base}/api/stream?${params}`);
    this.source = source;
    for (const type of EVENT_TYPES) source.addEventListener(type, (event) => this._event(source, event));
    source.addEventListener("close", (event) => {
      if (source !== this.source) return;
      let frame = {};
      try {
        frame = JSON.parse(event.data);
      } catch {
        /* no body: treat as dropped */
      }
      conn._closed(Number(frame.code) || 1006, String(frame.reason ?? ""));
    });
    source.onerror = () => {
      // EventSource would reconnect with the same (used) ticket: reconnect ourselves.
      if (source !== this.source) return;
      conn._closed(1006, "The event stream was interrupted.");
    };
  }

  _event(source, event) {
    if (source !== this.source) return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (event.lastEventId) this.cursor = event.lastEventId;
    if (frame?.type === "joined") {
      // The Connection pages the gap of a room joined afresh, not of one resumed.
      frame.resumed = this._resuming.has(frame.room);
      this._known.add(frame.room);
    }
    if (frame && typeof frame === "object") this.conn._dispatch(frame);
  }

  /** True when the connection has rooms this stream was not opened for (joined meanwhile). */
  missesRooms() {
    return this.conn.rooms.some((room) => !this.rooms.includes(room));
  }

  /** Forget the cursor: back on a socket, which resumes per room with `since`. */
  reset() {
    this.cursor = null;
    this._known.clear();
  }

  /** Close the stream (the cursor stays, for the next open). */
  close() {
    const source = this.source;
    this.source = null;
    source?.close();
  }

  /**
   * Send a one-off frame (edit, delete, react, read, typing) by its REST twin; false if
   * it has none. The answer is the event a socket gets, dispatched with the frame's `ref`;
   * a refusal is dispatched as an `error` with that `ref`. Nothing is retried: as on a
   * socket, a stale edit must not land later.
   */
  request(frame) {
    const rest = restOf(frame);
    if (!rest) return false;
    const [method, path, json] = rest;
    const conn = this.conn;
    conn.session.api(path, { method, json }).then(
      (event) => {
        if (event && typeof event === "object") conn._dispatch({ ...event, ref: frame.ref });
      },
      (err) => {
        if (frame.ref === undefined) return; // typing and plain read marks: best effort
        conn._dispatch({ type: "error", ref: frame.ref, ...errorOf(err) });
      },
    );
    return true;
  }

  /** Send one queued message by REST, after the ones before it; the answer is dispatched as a frame. */
  send(item, epoch) {
    this._sending = this._sending.then(() => this._post(item, epoch));
  }

  async _post(item, epoch) {
    const conn = this.conn;
    if (epoch !== conn._epoch || !conn._outbox.includes(item)) return;
    const json = { body: item.body, ref: item.ref };
    if (item.reply_to) json.reply_to = item.reply_to;
    if (item.attachments?.length) json.attachments = item.attachments;
    try {
      const ack = await conn.session.api(`/api/rooms/${encodeURIComponent(item.room)}/messages`, {
        method: "POST",
        json,
      });
      conn._dispatch({ ...ack, type: "ack", ref: item.ref });
    } catch (err) {
      if (err instanceof ApiError && err.status !== 401) {
        conn._dispatch({ type: "error", ref: item.ref, ...errorOf(err) });
      } else {
        // Unreachable or the token refused: send again (same ref) once reconnected.
        item.sentEpoch = -1;
      }
    }
  }
}

/** The `error` frame's fields for a refused REST call: the same codes as a socket's
 * (429 and 503 carry retry_after). */
function errorOf(err) {
  if (!(err instanceof ApiError)) return { code: "unavailable", detail: String(err?.message ?? err) };
  const code = err.code ?? (err.status === 429 ? "rate_limited" : err.status >= 500 ? "unavailable" : "bad_frame");
  return { code, detail: err.detail, retry_after: err.retryAfter };
}
