// chat-people.js — finding people by name: the "Message someone" box of the sidebar
// (starts a direct message) and `@` completion in the composer. Both ask
// `GET /api/users?q=PREFIX` after a short pause in typing, and only show the answer
// to the newest question (an older, slower answer is dropped).

import { clear, h, setText, showText } from "./shared/dom.js";
import { couldNot } from "./shared/errors.js";
import { displayName } from "./chat-changes.js";

const SEARCH_DELAY = 250; // ms of no typing before asking the server

/** Ask for users whose name starts with a prefix, debounced; `find(q)` resolves to the newest answer's items. */
class UserSearch {
  constructor(session) {
    this.session = session;
    this.timer = null;
    this.asked = 0;
  }

  /** Calls `done(items, error)` with the answer for `q`, unless a newer question came since. */
  find(q, done) {
    clearTimeout(this.timer);
    const ticket = ++this.asked;
    this.timer = setTimeout(async () => {
      try {
        const answer = await this.session.api("/api/users", { query: { q } });
        if (ticket === this.asked) done(answer?.items ?? [], null);
      } catch (err) {
        if (ticket === this.asked) done([], err);
      }
    }, SEARCH_DELAY);
  }

  cancel() {
    clearTimeout(this.timer);
    this.asked += 1;
  }
}

function personLabel(user) {
  const shown = displayName(user);
  return shown === user.name ? user.name : `${shown} (${user.name})`;
}

/**
 * The sidebar's "Message someone" box: type a name, pick a person, and the DM opens.
 * `startDm(username)` does the rest (POST /api/dms) and may throw a words-ready Error.
 */
export class DmPicker {
  constructor({ session, input, results, status, me, startDm }) {
    this.search = new UserSearch(session);
    this.input = input;
    this.results = results;
    this.status = status;
    this.me = me;
    this.startDm = startDm;
    input.addEventListener("input", () => this.#typed());
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.reset();
      if (event.key === "ArrowDown") {
        event.preventDefault();
        this.results.querySelector("button")?.focus();
      }
    });
    input.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.results.querySelector("button")?.click();
    });
  }

  reset() {
    this.search.cancel();
    this.input.value = "";
    clear(this.results);
    showText(this.status, "");
  }

  #typed() {
    const q = this.input.value.trim().replace(/^@/, "");
    if (!q) {
      this.search.cancel();
      clear(this.results);
      showText(this.status, "");
      return;
    }
    this.search.find(q, (items, err) => {
      clear(this.results);
      if (err) {
        showText(this.status, couldNot("search for people", err));
        return;
      }
      const me = this.me();
      const people = items.filter((u) => !me || u.id !== me.id);
      showText(this.status, people.length ? "" : `Nobody’s name starts with “${q}”.`);
      for (const user of people) {
        this.results.append(
          h(
            "li",
            {},
            h("button", {
              type: "button",
              class: "dm-result",
              data: { user: user.name },
              text: personLabel(user),
              attrs: { "aria-label": `Message ${personLabel(user)}` },
              on: { click: (event) => this.#pick(user, event.currentTarget) },
            }),
          ),
        );
      }
    });
  }

  async #pick(user, button) {
    button.disabled = true;
    showText(this.status, `Opening a conversation with ${displayName(user)}…`);
    try {
      await this.startDm(user.name);
      this.reset();
    } catch (err) {
      showText(this.status, err.message);
      button.disabled = false;
    }
  }
}

const MENTION_BEFORE_CARET = /(^|[\s(])@([\p{L}\p{N}_.-]{1,32})$/u;

/**
 * `@` completion in the composer: typing `@` and the start of a name lists matching
 * people; Up/Down move, Enter or Tab takes one, Escape closes. `handleKey(event)`
 * must run first in the composer's keydown (it returns true when it used the key).
 */
export class MentionCompleter {
  constructor({ session, input, list }) {
    this.search = new UserSearch(session);
    this.input = input;
    this.list = list;
    this.items = [];
    this.active = -1;
    this.range = null; // [start, end] of the "@prefix" being completed
    input.addEventListener("input", () => this.#typed());
    input.addEventListener("blur", () => setTimeout(() => this.close(), 150));
  }

  get open() {
    return !this.list.hidden && this.items.length > 0;
  }

  handleKey(event) {
    if (!this.open) return false;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      this.#highlight((this.active + step + this.items.length) % this.items.length);
      return true;
    }
    if ((event.key === "Enter" || event.key === "Tab") && !event.shiftKey) {
      event.preventDefault();
      this.#choose(this.items[Math.max(0, this.active)]);
      return true;
    }
    if (event.key === "Escape") {
      event.preventDefault();
      this.close();
      return true;
    }
    return false;
  }

  close() {
    this.search.cancel();
    this.items = [];
    this.active = -1;
    this.range = null;
    clear(this.list);
    this.list.hidden = true;
    this.input.removeAttribute("aria-activedescendant");
  }

  #typed() {
    const caret = this.input.selectionStart ?? this.input.value.length;
    const match = this.input.value.slice(0, caret).match(MENTION_BEFORE_CARET);
    if (!match) {
      this.close();
      return;
    }
    const prefix = match[2];
    this.range = [caret - prefix.length - 1, caret];
    this.search.find(prefix, (items) => {
      this.items = items.slice(0, 8);
      clear(this.list);
      this.items.forEach((user, i) => {
        this.list.append(
          h(
            "li",
            {
              id: `mention-${i}`,
              class: "mention-option",
              data: { user: user.name },
              attrs: { role: "option", "aria-selected": "false" },
              on: {
                mousedown: (event) => {
                  event.preventDefault(); // keep the focus in the composer
                  this.#choose(user);
                },
              },
            },
            h("span", { class: "mention-name", text: `@${user.name}` }),
            displayName(user) !== user.name ? h("span", { class: "muted", text: ` ${displayName(user)}` }) : null,
          ),
        );
      });
      this.list.hidden = this.items.length === 0;
      if (this.items.length) this.#highlight(0);
    });
  }

  #highlight(index) {
    this.active = index;
    [...this.list.children].forEach((li, i) => li.setAttribute("aria-selected", i === index ? "true" : "false"));
    this.input.setAttribute("aria-activedescendant", `mention-${index}`);
  }

  #choose(user) {
    if (!user || !this.range) return;
    const [start, end] = this.range;
    const value = this.input.value;
    const insert = `@${user.name} `;
    this.input.value = value.slice(0, start) + insert + value.slice(end);
    const caret = start + insert.length;
    this.input.setSelectionRange(caret, caret);
    this.close();
    this.input.dispatchEvent(new Event("input"));
    setText(this.list, "");
  }
}
