// dom.js — tiny DOM helpers that only ever put user data into the page as text.
//
// Nothing here parses HTML: elements are created with createElement, text goes in
// through text nodes / textContent, and attributes are set one by one. No inline
// styles either (the Content-Security-Policy forbids them): use classes and `hidden`.

/**
 * Create an element.
 *   h("li", { class: "msg own", text: body, data: { seq: 3 }, attrs: { "aria-label": "..." },
 *             on: { click: fn }, hidden: true }, child1, "text child", ...)
 * `text` and string children become text nodes; never HTML.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") {
      el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    } else if (key === "text") {
      el.textContent = String(value);
    } else if (key === "data") {
      for (const [k, v] of Object.entries(value)) if (v !== undefined && v !== null) el.dataset[k] = String(v);
    } else if (key === "attrs") {
      for (const [k, v] of Object.entries(value)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === "style" || k.startsWith("on")) throw new Error(`dom.h: refusing attribute ${k}`);
        el.setAttribute(k, v === true ? "" : String(v));
      }
    } else if (key === "on") {
      for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    } else if (key in el && typeof el[key] !== "function") {
      el[key] = value; // id, hidden, type, value, disabled, htmlFor...
    } else {
      throw new Error(`dom.h: unknown property ${key}`);
    }
  }
  append(el, ...children);
  return el;
}

/** Append children (nodes or strings, which become text nodes; null is skipped). */
export function append(parent, ...children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Remove every child. */
export function clear(el) {
  el.replaceChildren();
  return el;
}

/** Set an element's text (shorthand that reads well at call sites). */
export function setText(el, text) {
  el.textContent = text === null || text === undefined ? "" : String(text);
  return el;
}

/** Show `text` in `el`, or hide `el` when there is none (form errors, status lines). */
export function showText(el, text) {
  setText(el, text);
  el.hidden = !text;
  return el;
}

/** `document.getElementById` that fails loudly when the page and script disagree. */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id} in the page`);
  return el;
}

const URL_RE = /\bhttps?:\/\/[^\s<>"']+/gi;
const TRAILING = /[.,;:!?)\]}'"]+$/;

/**
 * Text with http(s) URLs turned into links, as a DocumentFragment. Only http and
 * https become links (never javascript:, data: …); links open in a new tab with
 * no opener and no referrer, and nothing is fetched or run until clicked.
 */
export function linkify(text) {
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    let url = match[0];
    const trail = url.match(TRAILING);
    if (trail) url = url.slice(0, -trail[0].length);
    let parsed = null;
    try {
      parsed = new URL(url);
    } catch {
      parsed = null;
    }
    if (!parsed || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) continue;
    if (match.index > last) frag.append(document.createTextNode(text.slice(last, match.index)));
    const a = document.createElement("a");
    a.href = parsed.href;
    a.textContent = url;
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow ugc";
    frag.append(a);
    last = match.index + url.length;
  }
  if (last < text.length) frag.append(document.createTextNode(text.slice(last)));
  return frag;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

/** A `<time>` element for an ISO 8601 timestamp: "14:05", or "Mar 3, 14:05" if not today. */
export function timeElement(iso, className = "") {
  const date = iso ? new Date(iso) : new Date();
  const valid = !Number.isNaN(date.getTime());
  const el = document.createElement("time");
  if (className) el.className = className;
  if (!valid) return el;
  el.dateTime = date.toISOString();
  el.title = fullFmt.format(date);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  el.textContent = sameDay ? timeFmt.format(date) : `${dayFmt.format(date)}, ${timeFmt.format(date)}`;
  return el;
}

/** A stable hue (0-359) for a name, for avatar colours via classes `hue-0`…`hue-11`. */
export function hueClass(name) {
  let hash = 0;
  for (const ch of String(name)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `hue-${hash % 12}`;
}

/** Initials for an avatar: "alice" -> "A", "mary-jane" -> "MJ". */
export function initials(name) {
  const parts = String(name).split(/[\s._-]+/).filter(Boolean);
  const letters = parts.length > 1 ? parts[0][0] + parts[1][0] : String(name).slice(0, 1);
  return letters.toUpperCase();
}
