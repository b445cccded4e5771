// status.js — the connection indicator of the chat and the console: a pill in the
// top bar (connecting / online / reconnecting in N s / offline / signed out) and a
// banner under it that says why and offers "Retry now". Same words, same look, on
// every page; the page only hands over its Connection.

import { CloseCode, State, Transport } from "./client.js";
import { h, setText } from "./dom.js";
import { closeWords } from "./errors.js";

/** The pill's colour for a state ("ok", "warn", "danger" or "neutral"; components.css). */
function toneOf(state, everOnline) {
  switch (state) {
    case State.ONLINE:
      return "ok";
    case State.CONNECTING:
      return everOnline ? "warn" : "neutral";
    case State.WAITING:
      return "warn";
    case State.OFFLINE:
    case State.SIGNED_OUT:
      return "danger";
    default:
      return "neutral";
  }
}

/** The pill's words: a label that only changes with the state, and a ticking countdown. */
function pillWords(state, everOnline, secs) {
  switch (state) {
    case State.ONLINE:
      return ["Online", ""];
    case State.CONNECTING:
      return [everOnline ? "Reconnecting…" : "Connecting…", ""];
    case State.WAITING:
      return secs > 0 ? ["Reconnecting", ` in ${secs} s`] : ["Reconnecting…", ""];
    case State.OFFLINE:
      return ["Offline", ""];
    case State.SIGNED_OUT:
      return ["Signed out", ""];
    default:
      return ["Not connected", ""];
  }
}

function queuedWords(queued) {
  if (!queued) return "";
  const what = queued === 1 ? "1 message is" : `${queued} messages are`;
  return ` ${what} waiting and will be sent when it is back.`;
}

/** The banner's sentence (empty: no banner) and whether "Retry now" helps. */
function bannerWords(info, everOnline, secs, queued) {
  const waiting = queuedWords(queued);
  switch (info.state) {
    case State.CONNECTING:
      return [everOnline ? `Reconnecting…${waiting}` : "", false];
    case State.WAITING: {
      // Attempts that fail in a row (1006, no close frame) mean the server is out of reach.
      const unreachable = !everOnline || (info.code === CloseCode.ABNORMAL && info.attempt > 1);
      const why = closeWords(unreachable ? null : info.code);
      return [`${why} Reconnecting in ${secs} s…${waiting}`, true];
    }
    case State.OFFLINE:
      return [`You are offline. We will reconnect when your network is back.${waiting}`, true];
    default:
      return ["", false];
  }
}

/**
 * Renders into two empty elements of the page: `indicator` (the pill; it gets
 * `#conn-text`) and `banner` (gets `#banner-text` and `#retry-now`).
 *
 * `queued()` says how many messages wait to be sent (the chat's outbox); the banner
 * mentions them. Call `attach(conn)` for each new Connection, `render()` when the
 * queue changes, and `detach()` when the page stops using the connection.
 */
export class ConnectionStatus {
  constructor(indicator, banner, { queued = () => 0 } = {}) {
    this.indicator = indicator;
    this.banner = banner;
    this.queued = queued;
    this.conn = null;
    this.info = { state: State.IDLE };
    this.everOnline = false;
    this.timer = null;
    this.off = null;

    // The pill is a polite live region: its label changes with the state only, and the
    // countdown that ticks every second is hidden from screen readers (the banner too).
    indicator.classList.add("conn");
    indicator.setAttribute("role", "status");
    this.label = document.createTextNode("");
    this.countdown = h("span", { class: "conn-countdown", attrs: { "aria-hidden": "true" } });
    this.text = h("span", { id: "conn-text" }, this.label, this.countdown);
    indicator.replaceChildren(h("span", { class: "conn-dot", attrs: { "aria-hidden": "true" } }), this.text);

    banner.classList.add("banner");
    banner.setAttribute("aria-live", "off");
    this.bannerText = h("span", { id: "banner-text" });
    this.retry = h("button", {
      type: "button",
      id: "retry-now",
      class: "btn small",
      text: "Retry now",
      hidden: true,
      on: { click: () => this.conn?.retryNow() },
    });
    banner.replaceChildren(this.bannerText, this.retry);
    this.render();
  }

  /** Follow `conn` (a client.js Connection) from now on. */
  attach(conn) {
    this.detach();
    this.conn = conn;
    this.everOnline = false;
    const offState = conn.on("state", (info) => {
      this.info = info;
      if (info.state === State.ONLINE) this.everOnline = true;
      this.render();
    });
    const offQueue = conn.on("queue", () => this.render());
    this.off = () => {
      offState();
      offQueue();
    };
    this.info = { state: conn.state };
    this.render();
  }

  /** Stop following the connection; the pill goes back to "Not connected". */
  detach() {
    this.off?.();
    this.off = null;
    this.conn = null;
    this.info = { state: State.IDLE };
    this.render();
  }

  render() {
    clearTimeout(this.timer);
    const { state, retryAt } = this.info;
    const secs = retryAt ? Math.max(0, Math.ceil((retryAt - Date.now()) / 1000)) : 0;
    const fallback = this.info.transport === Transport.STREAM;
    let [label, countdown] = pillWords(state, this.everOnline, secs);
    if (fallback && state === State.ONLINE) label = `${label} · fallback (HTTP stream)`;
    if (this.label.data !== label) this.label.data = label; // announce state changes only
    setText(this.countdown, countdown);
    this.indicator.dataset.state = state;
    this.indicator.dataset.tone = toneOf(state, this.everOnline);
    const { code, reason } = this.info;
    this.indicator.dataset.transport = this.info.transport ?? Transport.WEBSOCKET;
    this.indicator.title = fallback
      ? "WebSockets are blocked on this network, so the chat uses an HTTP event stream and sends " +
        "by HTTP. Messages work as usual; typing, read marks, edits and reactions wait for the " +
        "WebSocket, which is tried again every little while."
      : reason
        ? `Last close: ${code ?? ""} ${reason}`.replace(/\s+/g, " ")
        : "";

    const [text, retry] = bannerWords(this.info, this.everOnline, secs, this.conn ? this.queued() : 0);
    this.banner.hidden = !text;
    this.banner.dataset.tone = state === State.OFFLINE ? "danger" : "warn";
    setText(this.bannerText, text);
    this.retry.hidden = !retry;
    if (state === State.WAITING) this.timer = setTimeout(() => this.render(), 250);
  }
}
