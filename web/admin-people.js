// admin-people.js — who is online (live) and the accounts (find, role, ban, disable,
// reset a password, kick).
//
// Online: the console sends `{"type": "watch", "topic": "presence"}` on its WebSocket
// after every `hello`; the server answers `presence_snapshot` (every room with its
// users), then `presence_changes` of every room as they happen. No polling: the list is
// the snapshot with the changes applied (a join of someone listed, or a leave of someone
// absent, changes nothing). Accounts: `/api/admin/users...`; every change is in the audit
// log, which `onChange` reloads.

import { clear, h, setText } from "/static/shared/dom.js";
import { couldNot } from "/static/shared/errors.js";
import { actionButton, confirmButton, showSecret } from "/static/admin-kit.js";

const STATE_TONE = { active: "ok", banned: "danger", disabled: "warn" };

/** The online list, kept from presence frames. */
export class Online {
  constructor({ rooms, status }, { me, moderate }) {
    this.els = { rooms, status };
    this.me = me; // () => the signed-in admin
    this.moderate = moderate; // (username, action) => Promise
    this.rooms = new Map(); // room -> Map(user id -> user)
  }

  /** Ask for the snapshot and the changes (after every `hello`: a reconnect starts afresh). */
  watch(conn) {
    setText(this.els.status, "Connecting to presence…");
    conn.sendFrame({ type: "watch", topic: "presence" });
  }

  snapshot(frame) {
    this.rooms.clear();
    for (const r of frame.rooms ?? []) this.rooms.set(r.room, new Map(r.users.map((u) => [u.id, u])));
    setText(this.els.status, `Live since ${new Date().toLocaleTimeString()}`);
    this.render();
  }

  /** A `presence_changes` frame, or a single `presence` frame. */
  change(frame) {
    const joined = frame.type === "presence" ? (frame.event === "join" ? [frame.user] : []) : frame.joined;
    const left = frame.type === "presence" ? (frame.event === "leave" ? [frame.user] : []) : frame.left;
    let users = this.rooms.get(frame.room);
    if (!users) this.rooms.set(frame.room, (users = new Map()));
    for (const u of joined ?? []) users.set(u.id, u);
    for (const u of left ?? []) users.delete(u.id);
    if (users.size === 0) this.rooms.delete(frame.room);
    this.render();
  }

  offline() {
    setText(this.els.status, "Paused: reconnecting…");
  }

  render() {
    const root = this.els.rooms;
    clear(root);
    const list = [...this.rooms.entries()].sort((a, b) => a[0].localeCompare(b[0]));
    if (list.length === 0) {
      root.append(h("p", { class: "empty", text: "Nobody is in a room right now." }));
      return;
    }
    const people = new Set(list.flatMap(([, users]) => [...users.keys()]));
    root.append(
      h("p", {
        class: "muted small-print",
        text: `${people.size} ${people.size === 1 ? "person" : "people"} in ${list.length} ${list.length === 1 ? "room" : "rooms"}`,
      }),
    );
    for (const [room, users] of list) {
      const ul = h("ul", { class: "people" });
      const sorted = [...users.values()].sort((a, b) => a.name.localeCompare(b.name));
      for (const user of sorted) ul.append(this.person(user));
      root.append(
        h(
          "div",
          { class: "room-block", data: { room } },
          h("h3", {}, h("span", { text: `# ${room}` }), h("span", { class: "count", text: String(users.size) })),
          ul,
        ),
      );
    }
  }

  person(user) {
    const row = h(
      "li",
      { class: "person", data: { user: user.name } },
      h("span", { class: "person-name", text: user.display_name || user.name }),
      user.display_name ? h("span", { class: "muted small-print", text: user.name }) : null,
      user.role !== "user" ? h("span", { class: "badge", data: { tone: user.role === "admin" ? "accent" : "neutral" }, text: user.role }) : null,
    );
    if (user.id === this.me()?.id) {
      row.append(h("span", { class: "muted small-print", text: "you" }));
      return row;
    }
    row.append(
      h(
        "span",
        { class: "person-actions" },
        confirmButton("Kick", "Kick?", "", () => this.moderate(user.name, "kick")),
        confirmButton("Ban", "Ban?", "danger-outline", () => this.moderate(user.name, "ban")),
      ),
    );
    return row;
  }
}

/** The accounts card: a search form, the list with actions, and a one-time password box. */
export class Users {
  constructor(session, els, { me, onChange }) {
    this.session = session;
    this.els = els; // form, q, role, state, list, status, more, secret
    this.me = me;
    this.onChange = onChange;
    this.nextAfter = null;
    els.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.load();
    });
    for (const select of [els.role, els.state]) select.addEventListener("change", () => this.load());
    els.more.addEventListener("click", () => this.load({ more: true }));
  }

  query() {
    const q = {};
    if (this.els.q.value.trim()) q.q = this.els.q.value.trim();
    if (this.els.role.value) q.role = this.els.role.value;
    if (this.els.state.value) q.state = this.els.state.value;
    return q;
  }

  async load({ more = false } = {}) {
    const query = { ...this.query(), limit: 50 };
    if (more && this.nextAfter) query.after = this.nextAfter;
    try {
      const page = await this.session.api("/api/admin/users", { query });
      if (!more) clear(this.els.list);
      for (const user of page.items) this.els.list.append(this.row(user));
      this.nextAfter = page.next_after;
      this.els.more.hidden = !page.next_after;
      const shown = this.els.list.children.length;
      setText(this.els.status, shown ? `${shown} shown${page.next_after ? ", more below" : ""}` : "No account matches.");
    } catch (err) {
      setText(this.els.status, couldNot("load the accounts", err));
    }
  }

  row(user) {
    const tr = h(
      "tr",
      { class: "user-row", data: { user: user.name, state: user.state, role: user.role } },
      h("td", {}, h("span", { class: "person-name", text: user.name }), user.display_name ? h("div", { class: "muted small-print", text: user.display_name }) : null),
      h("td", {}, h("span", { class: "badge role", data: { tone: user.role === "admin" ? "accent" : "neutral" }, text: user.role })),
      h("td", {}, h("span", { class: "badge state", data: { tone: STATE_TONE[user.state] ?? "neutral" }, text: user.state })),
      h("td", { class: "muted small-print", text: new Date(user.created_at).toLocaleDateString() }),
    );
    const actions = h("td", { class: "user-actions" });
    if (user.id === this.me()?.id) {
      actions.append(h("span", { class: "muted small-print", text: "you" }));
    } else {
      actions.append(...this.actionsFor(user));
    }
    tr.append(actions);
    return tr;
  }

  actionsFor(user) {
    const out = [];
    const act = (path, words, body) => () => this.change(user, path, words, body);
    if (user.role !== "bot") {
      const to = user.role === "admin" ? "user" : "admin";
      out.push(confirmButton(to === "admin" ? "Make admin" : "Make user", "Sure?", "", act("role", `is now ${to === "admin" ? "an admin" : "a user"}`, { role: to }), "role"));
    }
    out.push(
      user.banned
        ? actionButton("Unban", "", act("unban", "was unbanned"), "unban")
        : confirmButton("Ban", "Ban?", "danger-outline", act("ban", "was banned"), "ban"),
    );
    out.push(
      user.disabled
        ? actionButton("Enable", "", act("enable", "was enabled"), "enable")
        : confirmButton("Disable", "Disable?", "danger-outline", act("disable", "was disabled"), "disable"),
    );
    if (user.role !== "bot") out.push(confirmButton("Reset password", "Reset?", "", () => this.reset(user), "password"));
    return out;
  }

  async change(user, path, words, body) {
    try {
      await this.session.api(`/api/admin/users/${encodeURIComponent(user.name)}/${path}`, { method: "POST", json: body });
      setText(this.els.status, `${user.name} ${words}.`);
    } catch (err) {
      setText(this.els.status, couldNot(`change ${user.name}`, err));
    }
    await this.load();
    this.onChange();
  }

  async reset(user) {
    try {
      const answer = await this.session.api(`/api/admin/users/${encodeURIComponent(user.name)}/password`, { method: "POST" });
      showSecret(this.els.secret, `The one-time password of ${answer.name} (their sessions were ended; they should choose their own once signed in):`, answer.password);
      setText(this.els.status, `${user.name}'s password was reset.`);
    } catch (err) {
      setText(this.els.status, couldNot(`reset ${user.name}'s password`, err));
    }
    await this.load();
    this.onChange();
  }
}
