// toasts.js — short-lived, dismissible notices stacked in one element of the page.
// Text only (textContent); styled by `.toast` in components.css.

import { h } from "./dom.js";

/**
 * A stack of notices in `container`: `show(text, tone)` with tone "info", "warn" or
 * "error". The same text shown again restarts its timer instead of stacking a copy;
 * at most `max` stay, each for `ttl` ms unless dismissed.
 */
export class Toasts {
  constructor(container, { max = 3, ttl = 8000 } = {}) {
    this.container = container;
    this.max = max;
    this.ttl = ttl;
    this.timers = new WeakMap();
  }

  show(text, tone = "info") {
    for (const el of this.container.children) {
      if (el.dataset.text === text) {
        this.#expire(el);
        return el;
      }
    }
    const el = h(
      "div",
      { class: `toast ${tone}`, data: { text }, attrs: { role: tone === "error" ? "alert" : "status" } },
      h("span", { class: "toast-text", text }),
      h("button", {
        type: "button",
        class: "toast-close",
        attrs: { "aria-label": "Dismiss" },
        text: "×",
        on: { click: () => el.remove() },
      }),
    );
    this.container.append(el);
    while (this.container.children.length > this.max) this.container.firstElementChild.remove();
    this.#expire(el);
    return el;
  }

  clear() {
    this.container.replaceChildren();
  }

  #expire(el) {
    clearTimeout(this.timers.get(el));
    this.timers.set(el, setTimeout(() => el.remove(), this.ttl));
  }
}
