// chat-search.js — the message search box and its results.
//
// `GET /api/search` answers with messages and a snippet in segments `{text, match}`;
// each segment goes into the page as text (matches in a <mark>), never as HTML.
// Clicking a result opens its room at that message (chat.js's `onOpen`).

import { clear, h, showText, timeElement } from "./shared/dom.js";
import { couldNot } from "./shared/errors.js";
import { displayName } from "./chat-changes.js";

const PAGE = 20; // results per request

export class MessageSearch {
  /**
   * @param {object} o
   * @param {Session} o.session
   * @param {object} o.els  form, input, panel, list, status, more, close, thisRoom
   * @param {() => string|null} o.currentRoom  the open room's name, for "this room only"
   * @param {(room: string) => string} o.roomLabel  how a room is named in a result
   * @param {(hit: {room: string, seq: number}) => void} o.onOpen  open a result's room at its message
   */
  constructor({ session, els, currentRoom, roomLabel, onOpen }) {
    this.session = session;
    this.els = els;
    this.currentRoom = currentRoom;
    this.roomLabel = roomLabel;
    this.onOpen = onOpen;
    this.query = null; // {q, room}: what the shown results answer
    this.nextOffset = null;
    this.seq = 0; // the newest request: older answers arriving late are dropped
    els.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.search();
    });
    els.more.addEventListener("click", () => this.#fetch(false));
    els.close.addEventListener("click", () => this.hide(true));
    els.thisRoom.addEventListener("change", () => this.query && this.search());
    els.panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.hide(true);
    });
    els.input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.hide();
    });
  }

  reset() {
    this.els.input.value = "";
    this.query = null;
    clear(this.els.list);
    this.hide();
  }

  hide(focusInput = false) {
    if (this.els.panel.hidden) return;
    this.els.panel.hidden = true;
    if (focusInput) this.els.input.focus();
  }

  /** Search for what the box holds, from the first page. */
  async search() {
    const q = this.els.input.value.trim();
    this.els.panel.hidden = false;
    clear(this.els.list);
    this.els.more.hidden = true;
    if (!q) {
      this.query = null;
      showText(this.els.status, "Type a word to search for.");
      return;
    }
    const room = this.els.thisRoom.checked ? this.currentRoom() : null;
    this.query = { q, room };
    this.nextOffset = 0;
    await this.#fetch(true);
  }

  async #fetch(first) {
    if (!this.query || this.nextOffset === null) return;
    const mine = ++this.seq;
    const query = { q: this.query.q, limit: PAGE, offset: this.nextOffset };
    if (this.query.room) query.room = this.query.room;
    showText(this.els.status, first ? "Searching…" : "");
    this.els.more.disabled = true;
    try {
      const answer = await this.session.api("/api/search", { query });
      if (mine !== this.seq) return;
      const items = answer?.items ?? [];
      for (const item of items) this.els.list.append(this.#result(item));
      this.nextOffset = typeof answer?.next_offset === "number" ? answer.next_offset : null;
      this.els.more.hidden = this.nextOffset === null;
      const none = first && !items.length;
      showText(this.els.status, none ? `No messages match “${this.query.q}”.` : "");
    } catch (err) {
      if (mine !== this.seq) return;
      showText(this.els.status, couldNot("search", err, { 404: "That room is not available any more." }));
    } finally {
      this.els.more.disabled = false;
    }
  }

  #result(item) {
    const snippet = h("p", { class: "search-snippet" });
    for (const part of item.snippet ?? []) {
      snippet.append(part.match ? h("mark", { text: part.text }) : document.createTextNode(part.text));
    }
    const open = () => {
      this.hide();
      this.onOpen({ room: item.room, seq: item.seq });
    };
    return h(
      "li",
      { class: "search-item", data: { room: item.room, seq: item.seq } },
      h(
        "button",
        { type: "button", class: "search-open", on: { click: open } },
        h("span", { class: "search-where", text: this.roomLabel(item.room) }),
        h("span", { class: "search-who", text: displayName(item.user) }),
        timeElement(item.ts, "search-time"),
        snippet,
      ),
    );
  }
}
