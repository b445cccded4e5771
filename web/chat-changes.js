// chat-changes.js — what happened to a message after it was sent: edits, deletion and
// reactions, and the quote of the message it replies to.
//
// A message's state is kept by seq (`MessageState`), apart from its element, so a change
// that arrives before the message itself (a live edit while history is still loading) is
// not lost. `edited`, `deleted` and `reaction` frames carry a `version` (the change's id
// in the room's history): a frame older than what is shown never overwrites it, and a
// deletion is final. The connection (shared/client.js) keeps the highest version per room
// and rejoins with `changes_after`, so the changes missed while away arrive as these same
// frames. Text only, as everywhere (shared/dom.js).

import { clear, h, linkify, setText } from "./shared/dom.js";

/** The reactions offered by the picker (any emoji of up to 16 characters is accepted). */
export const QUICK_EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "👀"];

const DELETED_TEXT = "message deleted";

/** The name people see: the display name when one is set. */
export function displayName(user) {
  return user?.display_name || user?.name || "someone";
}

export class MessageState {
  constructor() {
    this.known = false; // the message frame itself was seen
    this.body = "";
    this.editedAt = null;
    this.deleted = false;
    this.textVersion = 0; // version of the newest edit/delete applied
    this.reactions = new Map(); // emoji -> {users: [names], version}
  }

  /** Take a message frame (history or live); changes already applied that are newer stay. */
  fromMessage(frame) {
    const changed = this.textVersion > 0 || this.deleted;
    if (!changed) {
      this.body = frame.body ?? "";
      this.editedAt = frame.edited_at ?? null;
      this.deleted = Boolean(frame.deleted);
    } else if (frame.deleted) {
      this.deleted = true;
    }
    for (const [emoji, users] of Object.entries(frame.reactions ?? {})) {
      if (!this.reactions.has(emoji) && Array.isArray(users)) this.reactions.set(emoji, { users: [...users], version: 0 });
    }
    this.known = true;
  }

  /** Take the message as history shows it now, over whatever was shown (a re-read). */
  reset(frame) {
    this.body = frame.body ?? "";
    this.editedAt = frame.edited_at ?? null;
    this.deleted = Boolean(frame.deleted);
    this.reactions = new Map(Object.entries(frame.reactions ?? {}).map(([emoji, users]) => [emoji, { users: [...users], version: 0 }]));
    this.known = true;
  }

  /** An `edited` frame; false when it is older than what is shown (or the message is gone). */
  applyEdited(frame) {
    if (this.deleted) return false;
    const version = Number(frame.version) || 0;
    if (version && version <= this.textVersion) return false;
    this.body = frame.body;
    this.editedAt = frame.edited_at ?? new Date().toISOString();
    this.textVersion = Math.max(this.textVersion, version);
    return true;
  }

  /** A `deleted` frame: final, whatever came before. */
  applyDeleted(frame) {
    if (this.deleted) return false;
    this.deleted = true;
    this.body = "";
    this.reactions.clear();
    this.textVersion = Math.max(this.textVersion, Number(frame.version) || 0);
    return true;
  }

  /** A `reaction` frame: the whole list of users for one emoji, unless an older state. */
  applyReaction(frame) {
    if (this.deleted) return false;
    const version = Number(frame.version) || 0;
    const had = this.reactions.get(frame.emoji);
    if (had && version && version <= had.version) return false;
    const users = Array.isArray(frame.users) ? [...frame.users] : [];
    if (users.length) this.reactions.set(frame.emoji, { users, version });
    else this.reactions.delete(frame.emoji);
    // An empty list still moves the version on, so an older "add" cannot bring it back.
    if (!users.length && version) this.reactions.set(frame.emoji, { users: [], version });
    return true;
  }
}

/** Show the state's text (or "message deleted") and the "edited" mark in a message element. */
export function renderText(li, state) {
  const body = li.querySelector(".msg-body");
  li.classList.toggle("deleted", state.deleted);
  li.dataset.deleted = state.deleted ? "true" : "false";
  clear(body);
  if (state.deleted) body.append(h("span", { class: "deleted-text", text: DELETED_TEXT }));
  else body.append(linkify(state.body));
  const mark = li.querySelector(".msg-edited");
  if (mark) {
    mark.hidden = state.deleted || !state.editedAt;
    if (state.editedAt) mark.title = `Edited ${new Date(state.editedAt).toLocaleString()}`;
  }
}

/** The reaction chips: emoji and count, pressed when it is mine; who reacted in the title. */
export function renderReactions(li, state, myName, onToggle) {
  const box = li.querySelector(".msg-reactions");
  clear(box);
  for (const [emoji, { users }] of state.reactions) {
    if (!users.length) continue;
    const mine = users.includes(myName);
    const who = users.join(", ");
    box.append(
      h(
        "button",
        {
          type: "button",
          class: "reaction",
          data: { emoji },
          title: who,
          attrs: { "aria-pressed": mine ? "true" : "false", "aria-label": `${emoji} ${users.length}: ${who}` },
          on: { click: () => onToggle(emoji, !mine) },
        },
        h("span", { class: "reaction-emoji", text: emoji, attrs: { "aria-hidden": "true" } }),
        h("span", { class: "reaction-count", text: users.length, attrs: { "aria-hidden": "true" } }),
      ),
    );
  }
  box.hidden = box.childElementCount === 0;
}

/** The quote a reply shows of the message it answers; clicking it shows that message. */
export function replyQuote(reply, onJump) {
  if (!reply) return null;
  const who = reply.user ? displayName(reply.user) : "In reply to";
  const excerpt = reply.excerpt ? reply.excerpt : DELETED_TEXT;
  return h(
    "button",
    {
      type: "button",
      class: "msg-reply",
      data: { replySeq: reply.seq },
      attrs: { "aria-label": `In reply to ${who}: ${excerpt}` },
      on: { click: () => onJump(reply.seq) },
    },
    h("span", { class: "msg-reply-author", text: who }),
    " ",
    h("span", { class: "msg-reply-excerpt", text: excerpt }),
  );
}

/** The first characters of a text, on one line, for quotes and the reply bar. */
export function excerptOf(text, max = 120) {
  const line = String(text ?? "").replace(/\s+/g, " ").trim();
  const chars = [...line];
  return chars.length > max ? `${chars.slice(0, max - 1).join("")}…` : line;
}

/** Two clicks to delete: the first arms the button for a few seconds. */
export function armConfirm(button, text, act, ms = 4000) {
  const before = button.dataset.label ?? button.textContent;
  button.dataset.label = before;
  if (button.classList.contains("confirming")) {
    button.classList.remove("confirming");
    clearTimeout(button._disarm);
    setText(button, before);
    act();
    return;
  }
  button.classList.add("confirming");
  setText(button, text);
  button._disarm = setTimeout(() => {
    button.classList.remove("confirming");
    setText(button, before);
  }, ms);
}
