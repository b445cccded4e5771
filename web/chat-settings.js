// chat-settings.js — the two dialogs: the current room's settings (topic, notification
// level, members, remove a member, leave, archive) and your profile (display name).
//
// Everything goes over HTTP; the server tells every member's connections about the
// change (`room` and `removed` frames), which chat.js applies, so what this module
// shows after a success is confirmed by the same frames as in every other tab.

import { clear, h, hueClass, initials, showText } from "./shared/dom.js";
import { couldNot } from "./shared/errors.js";
import { displayName } from "./chat-changes.js";

const LEVELS = ["all", "mentions", "nothing"];

function roomPath(room, rest = "") {
  return `/api/rooms/${encodeURIComponent(room)}${rest}`;
}

function say(el, text, ok = false) {
  showText(el, text);
  el.dataset.tone = ok ? "ok" : "danger";
}

export class RoomSettings {
  /**
   * @param {object} o
   * @param {Session} o.session
   * @param {object} o.els  dialog, title, topicForm, topicInput, topicSave, levels (fieldset),
   *   members, status, archive, leave, close
   * @param {() => object} o.me  the signed-in user
   * @param {(room: string) => void} o.onLeft  we left the room
   * @param {(room: string, info: object) => void} o.onInfo  the server answered with the room's new state
   */
  constructor({ session, els, me, onLeft, onInfo }) {
    this.session = session;
    this.els = els;
    this.me = me;
    this.onLeft = onLeft;
    this.onInfo = onInfo;
    this.view = null;
    this.leaving = null; // the room being left, while its request runs
    els.close.addEventListener("click", () => els.dialog.close());
    els.topicForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#saveTopic();
    });
    els.levels.addEventListener("change", (event) => this.#setLevel(event.target.value));
    els.archive.addEventListener("click", () => this.#toggleArchive());
    els.leave.addEventListener("click", () => this.#leave());
    els.dialog.addEventListener("close", () => {
      this.view = null;
    });
  }

  /** The owner of the room or an admin may change it and remove people. */
  canManage(view) {
    const me = this.me();
    return Boolean(me && view && view.info.kind !== "dm" && (view.info.owner?.id === me.id || me.role === "admin"));
  }

  open(view) {
    this.view = view;
    showText(this.els.status, "");
    this.render();
    this.els.dialog.showModal();
    this.loadMembers();
    this.loadLevel();
  }

  /** The person's notification level for the room (unset: the server's default). */
  async loadLevel() {
    const view = this.view;
    try {
      const answer = await this.session.api(roomPath(view.name, "/notify"));
      if (view !== this.view || !LEVELS.includes(answer?.level)) return;
      view.info.notify = answer.level;
      this.render();
    } catch {
      /* the radio buttons show the default; changing them reports any failure */
    }
  }

  /** Show the room's current state (again after a `room` frame). */
  render() {
    const view = this.view;
    if (!view) return;
    const dm = view.info.kind === "dm";
    const manage = this.canManage(view);
    this.els.title.textContent = dm ? `Conversation with ${displayName(view.info.peer)}` : `#${view.name} settings`;
    this.els.topicForm.hidden = dm;
    this.els.topicInput.value = view.info.topic ?? "";
    this.els.topicInput.readOnly = !manage;
    this.els.topicSave.hidden = !manage;
    const level = LEVELS.includes(view.info.notify) ? view.info.notify : dm ? "all" : "mentions";
    for (const radio of this.els.levels.querySelectorAll("input")) radio.checked = radio.value === level;
    this.els.archive.hidden = !manage;
    this.els.archive.textContent = view.info.archived ? "Unarchive room" : "Archive room";
    this.els.leave.hidden = dm || view.info.owner?.id === this.me()?.id; // the owner cannot leave
  }

  async loadMembers() {
    const view = this.view;
    if (!view) return;
    const list = this.els.members;
    clear(list).append(h("li", { class: "muted small-print", text: "Loading members…" }));
    let items;
    try {
      items = (await this.session.api(roomPath(view.name, "/members")))?.items ?? [];
    } catch (err) {
      clear(list).append(h("li", { class: "form-error", text: couldNot("load the members", err) }));
      return;
    }
    if (view !== this.view) return;
    clear(list);
    const me = this.me();
    const manage = this.canManage(view);
    for (const user of items) {
      const you = me && user.id === me.id;
      const remove = manage && !you
        ? h("button", {
            type: "button",
            class: "btn subtle small",
            text: "Remove",
            attrs: { "aria-label": `Remove ${user.name} from the room` },
            on: { click: (event) => this.#remove(user, event.currentTarget) },
          })
        : null;
      list.append(
        h(
          "li",
          { class: "member", data: { user: user.name } },
          h("span", { class: `avatar small ${hueClass(user.name)}`, text: initials(displayName(user)), attrs: { "aria-hidden": "true" } }),
          h("span", { class: "person-name", text: displayName(user), title: user.name }),
          you ? h("span", { class: "muted", text: " (you)" }) : null,
          remove,
        ),
      );
    }
    if (!items.length) list.append(h("li", { class: "muted small-print", text: "Anyone can read this room; nobody has joined it as a member." }));
  }

  async #patch(json, what) {
    const view = this.view;
    try {
      const info = await this.session.api(roomPath(view.name), { method: "PATCH", json });
      if (info && typeof info === "object" && "archived" in info) this.onInfo(view.name, info);
      return true;
    } catch (err) {
      say(this.els.status, couldNot(what, err, { 403: "Only the room’s owner or an admin can change it." }));
      return false;
    }
  }

  async #saveTopic() {
    if (!this.view) return;
    const topic = this.els.topicInput.value.trim();
    this.els.topicSave.disabled = true;
    if (await this.#patch({ topic }, "save the topic")) say(this.els.status, topic ? "Topic saved." : "Topic cleared.", true);
    this.els.topicSave.disabled = false;
  }

  async #toggleArchive() {
    const view = this.view;
    if (!view) return;
    const archived = !view.info.archived;
    this.els.archive.disabled = true;
    if (await this.#patch({ archived }, archived ? "archive the room" : "unarchive the room")) {
      say(this.els.status, archived ? "The room is archived: read-only for everyone." : "The room is open again.", true);
    }
    this.els.archive.disabled = false;
  }

  async #setLevel(level) {
    const view = this.view;
    if (!view || !LEVELS.includes(level)) return;
    const before = view.info.notify ?? "all";
    try {
      await this.session.api(roomPath(view.name, "/notify"), { method: "PUT", json: { level } });
      if (view !== this.view) return;
      view.info.notify = level;
      const words = { all: "every message", mentions: "mentions of you only", nothing: "nothing: the room is muted" };
      say(this.els.status, `You will be notified about ${words[level]}.`, true);
    } catch (err) {
      for (const radio of this.els.levels.querySelectorAll("input")) radio.checked = radio.value === before;
      say(this.els.status, couldNot("change your notifications", err));
    }
  }

  async #remove(user, button) {
    const view = this.view;
    if (!view) return;
    button.disabled = true;
    try {
      await this.session.api(roomPath(view.name, `/members/${encodeURIComponent(user.name)}`), { method: "DELETE" });
      button.closest("li")?.remove();
      say(this.els.status, `${displayName(user)} was removed from the room.`, true);
    } catch (err) {
      button.disabled = false;
      say(this.els.status, couldNot(`remove ${user.name}`, err, { 403: "Only the room’s owner or an admin can remove people." }));
    }
  }

  async #leave() {
    const view = this.view;
    const me = this.me();
    if (!view || !me) return;
    this.els.leave.disabled = true;
    this.leaving = view.name; // the `removed` frame may come before the answer
    try {
      await this.session.api(roomPath(view.name, `/members/${encodeURIComponent(me.name)}`), { method: "DELETE" });
      this.els.dialog.close();
      this.onLeft(view.name);
    } catch (err) {
      say(this.els.status, couldNot("leave the room", err));
    } finally {
      this.els.leave.disabled = false;
      this.leaving = null;
    }
  }
}

export class ProfileForm {
  /**
   * @param {object} o
   * @param {Session} o.session
   * @param {object} o.els  dialog, form, username, input, save, status, close
   * @param {() => object} o.me
   * @param {(user: object) => void} o.onSaved  the new display name is stored
   */
  constructor({ session, els, me, onSaved }) {
    this.session = session;
    this.els = els;
    this.me = me;
    this.onSaved = onSaved;
    els.close.addEventListener("click", () => els.dialog.close());
    els.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#save();
    });
  }

  open() {
    const me = this.me();
    if (!me) return;
    this.els.username.textContent = me.name;
    this.els.input.value = me.display_name ?? "";
    showText(this.els.status, "");
    this.els.dialog.showModal();
    this.els.input.focus();
  }

  async #save() {
    const name = this.els.input.value.trim();
    if (!name || [...name].length > 64) {
      say(this.els.status, "A display name has 1 to 64 characters.");
      return;
    }
    this.els.save.disabled = true;
    try {
      const user = await this.session.api("/api/me", { method: "PATCH", json: { display_name: name } });
      this.onSaved({ display_name: user?.display_name ?? name });
      say(this.els.status, "Saved. Others see this name from now on.", true);
    } catch (err) {
      say(this.els.status, couldNot("save your display name", err));
    } finally {
      this.els.save.disabled = false;
    }
  }
}
