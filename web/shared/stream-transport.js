// stream-transport.js — the Connection's fallback when a WebSocket cannot be opened
// (a proxy that blocks the upgrade): frames come from the event stream
// (`GET /api/stream`, Server-Sent Events) and sends go by REST (`POST
// /api/rooms/{room}/messages`). See docs/protocol.md, "Without a WebSocket".
//
// The stream carries the very frames a socket gets, so they go through the
// Connection's own `_dispatch` and the views never know the difference. What has no
// REST equivalent (typing, read cursor, edit, delete, react) is unavailable here.
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
      if (!conn.rooms.length) {
        // A stream names at least one room: until the first join (which opens it) be
        // online for REST, once the server answers.
        const user = await conn.session.loadUser();
        if (epoch === conn._epoch) conn._dispatch({ type: "hello", user, limits: conn.limits });
        return;
      }
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
        // The same codes as a socket's `error` frame (429/503 carry retry_after).
        const code = err.code ?? (err.status === 429 ? "rate_limited" : err.status >= 500 ? "unavailable" : "bad_frame");
        conn._dispatch({ type: "error", ref: item.ref, code, detail: err.detail, retry_after: err.retryAfter });
      } else {
        // Unreachable or the token refused: send again (same ref) once reconnected.
        item.sentEpoch = -1;
      }
    }
  }
}
