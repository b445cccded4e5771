// chat-inbox.js — the notification bell, its inbox, and the browser's own notifications.
//
// The count starts from `hello` (`notifications_unread`) and follows live `notification`
// frames; the inbox lists `GET /api/notifications` (oldest first from the server, shown
// newest first) and "Mark all read" posts `POST /api/notifications/read {upto}`. The
// browser's Notification API is used only after the person pressed the button that
// asks for it (never on load), and only while the tab is hidden, for mentions and DMs.

import { clear, h, setText, showText, timeElement } from "./shared/dom.js";
import { couldNot } from "./shared/errors.js";
import { displayName } from "./chat-changes.js";

const PAGE = 100; // notifications per request
const MAX_PAGES = 5; // the inbox shows at most the newest PAGE * MAX_PAGES
const DESKTOP_KEY = "chat.desktop-notifications";

function kindWords(item) {
  const from = item.from ? displayName(item.from) : null;
  if (item.kind === "mention") return `${from ?? "Someone"} mentioned you${item.room ? ` in #${item.room}` : ""}`;
  if (item.kind === "dm") return `${from ?? "Someone"} sent you a message`;
  return item.title || "Notification";
}

export class Inbox {
  /**
   * @param {object} o
   * @param {Session} o.session
   * @param {object} o.els  bell, count, panel, list, empty, status, markRead, close, desktop, desktopStatus
   * @param {(item) => void} o.onOpen  open the room of a notification at its seq
   * @param {(item) => void} o.onLive  a live notification arrived (rooms may need reloading)
   */
  constructor({ session, els, onOpen, onLive }) {
    this.session = session;
    this.els = els;
    this.onOpen = onOpen;
    this.onLive = onLive;
    this.items = new Map(); // id -> notification
    this.unread = 0;
    this.lastId = 0; // newest id known from hello or frames
    this.readUpto = 0; // ids up to this one are read
    this.loaded = false;
    els.bell.addEventListener("click", () => (els.panel.hidden ? this.show() : this.hide()));
    els.close.addEventListener("click", () => this.hide(true));
    els.markRead.addEventListener("click", () => this.markAllRead());
    els.panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.hide(true);
    });
    els.desktop.addEventListener("click", () => this.#toggleDesktop());
  }

  reset() {
    this.items.clear();
    this.unread = 0;
    this.lastId = 0;
    this.readUpto = 0;
    this.loaded = false;
    clear(this.els.list);
    this.hide();
    this.#renderCount();
  }

  /** From `hello`: the count and the newest id (again after every reconnect). */
  hello(frame) {
    this.unread = Number(frame.notifications_unread) || 0;
    this.lastId = Math.max(this.lastId, Number(frame.last_notification_id) || 0);
    this.#renderCount();
    if (!this.els.panel.hidden) this.load();
  }

  /** A live `notification` frame. */
  live(frame) {
    if (this.items.has(frame.id)) return;
    // One already counted by `hello` (sent again after a reconnect) is not new.
    const fresh = frame.id > this.lastId;
    if (fresh && frame.id > this.readUpto) this.unread += 1;
    this.lastId = Math.max(this.lastId, frame.id);
    if (this.loaded) this.items.set(frame.id, frame);
    this.#renderCount();
    this.#renderList();
    if (fresh) this.#desktop(frame);
    this.onLive(frame, fresh);
  }

  async show() {
    this.els.panel.hidden = false;
    this.els.bell.setAttribute("aria-expanded", "true");
    this.#renderDesktopButton();
    this.els.panel.querySelector("button")?.focus();
    await this.load();
  }

  hide(focusBell = false) {
    if (this.els.panel.hidden) return;
    this.els.panel.hidden = true;
    this.els.bell.setAttribute("aria-expanded", "false");
    if (focusBell) this.els.bell.focus();
  }

  /** Fetch what is not held yet (everything, the first time), page by page. */
  async load() {
    let after = this.loaded ? Math.max(0, ...this.items.keys()) : 0;
    showText(this.els.status, this.loaded ? "" : "Loading…");
    try {
      for (let page = 0; page < MAX_PAGES; page += 1) {
        const answer = await this.session.api("/api/notifications", { query: { after, limit: PAGE } });
        const items = answer?.items ?? [];
        for (const item of items) this.items.set(item.id, item);
        if (typeof answer?.unread === "number") this.unread = answer.unread;
        if (items.length < PAGE) break;
        after = Math.max(after, ...items.map((i) => i.id));
      }
      this.loaded = true;
      // The server keeps one read mark: the `unread` newest are the unread ones.
      const newest = [...this.items.keys()].sort((a, b) => b - a);
      if (newest.length) this.readUpto = Math.max(this.readUpto, newest[this.unread] ?? 0);
      showText(this.els.status, "");
    } catch (err) {
      showText(this.els.status, couldNot("load your notifications", err));
    }
    this.#renderCount();
    this.#renderList();
  }

  async markAllRead() {
    const upto = Math.max(this.lastId, 0, ...this.items.keys());
    if (!upto) return;
    this.els.markRead.disabled = true;
    try {
      const answer = await this.session.api("/api/notifications/read", { method: "POST", json: { upto } });
      this.readUpto = Math.max(this.readUpto, Number(answer?.upto) || upto);
      this.unread = Number(answer?.unread) || 0;
      showText(this.els.status, "");
    } catch (err) {
      showText(this.els.status, couldNot("mark your notifications read", err));
    } finally {
      this.els.markRead.disabled = false;
    }
    this.#renderCount();
    this.#renderList();
  }

  /** `notifications_read`: this user marked notifications read (maybe in another tab). */
  markedRead(frame) {
    this.readUpto = Math.max(this.readUpto, Number(frame.upto) || 0);
    if (typeof frame.unread === "number") this.unread = frame.unread;
    this.#renderCount();
    this.#renderList();
  }

  #isRead(item) {
    return item.id <= this.readUpto;
  }

  #renderCount() {
    const n = this.unread;
    setText(this.els.count, n ? (n > 99 ? "99+" : String(n)) : "");
    this.els.count.hidden = !n;
    this.els.bell.dataset.unread = String(n);
    this.els.bell.setAttribute("aria-label", n ? `Notifications, ${n} unread` : "Notifications");
  }

  #renderList() {
    if (!this.loaded) return;
    const list = this.els.list;
    clear(list);
    const newest = [...this.items.values()].sort((a, b) => b.id - a.id);
    for (const item of newest) {
      const read = this.#isRead(item);
      list.append(
        h(
          "li",
          { class: ["inbox-item", !read && "is-unread"], data: { id: item.id, kind: item.kind } },
          h(
            "button",
            {
              type: "button",
              class: "inbox-open",
              on: {
                click: () => {
                  this.hide();
                  this.onOpen(item);
                },
              },
            },
            h("span", { class: "inbox-what", text: kindWords(item) }),
            " ",
            timeElement(item.ts, "inbox-time"),
            h("span", { class: "inbox-body", text: item.body ?? "" }),
            read ? null : h("span", { class: "sr-only", text: " (unread)" }),
          ),
        ),
      );
    }
    this.els.empty.hidden = newest.length > 0;
  }

  // --- the browser's own notifications ---------------------------------------------

  #desktopOn() {
    try {
      return "Notification" in globalThis && Notification.permission === "granted" && localStorage.getItem(DESKTOP_KEY) === "on";
    } catch {
      return false;
    }
  }

  #renderDesktopButton() {
    const button = this.els.desktop;
    const say = (text) => showText(this.els.desktopStatus, text);
    if (!("Notification" in globalThis)) {
      button.hidden = true;
      say("This browser cannot show notifications.");
      return;
    }
    button.hidden = false;
    if (Notification.permission === "denied") {
      button.hidden = true;
      say("Notifications are blocked for this site in your browser’s settings.");
      return;
    }
    say("");
    setText(button, this.#desktopOn() ? "Stop desktop notifications" : "Show desktop notifications");
    button.setAttribute("aria-pressed", this.#desktopOn() ? "true" : "false");
  }

  async #toggleDesktop() {
    if (!("Notification" in globalThis)) return;
    try {
      if (this.#desktopOn()) {
        localStorage.setItem(DESKTOP_KEY, "off");
      } else {
        const answer = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
        if (answer === "granted") localStorage.setItem(DESKTOP_KEY, "on");
      }
    } catch {
      /* storage disabled: nothing to remember */
    }
    this.#renderDesktopButton();
  }

  /** A mention or a DM while the tab is hidden: the browser's own notification, as text. */
  #desktop(item) {
    if (document.visibilityState !== "hidden" || !this.#desktopOn()) return;
    if (item.kind !== "mention" && item.kind !== "dm") return;
    try {
      const note = new Notification(kindWords(item), { body: item.body ?? "", tag: `chat-${item.id}` });
      note.addEventListener("click", () => {
        globalThis.focus();
        note.close();
        this.onOpen(item);
      });
    } catch {
      /* some browsers only allow notifications from a service worker */
    }
  }
}
