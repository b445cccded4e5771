// chat-files.js — files in the chat: picking (button, drag and drop, paste), uploading with
// progress, and showing a message's attachments (image thumbnails that open full size,
// download chips for the rest).
//
// Files are fetched with the session's bearer token (the API takes no cookies), turned
// into blob: URLs for <img> and downloads. Names and sizes are text, as everywhere
// (shared/dom.js); nothing from a file or its name is ever parsed as HTML.

import { clear, h } from "./shared/dom.js";

const DEFAULT_MAX_UPLOAD = 10 * 1024 * 1024;
const DEFAULT_MAX_FILES = 10;

/** "1.4 MB", "312 KB", "18 bytes". */
export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} byte${bytes === 1 ? "" : "s"}`;
  const units = ["KB", "MB", "GB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/** Words for a refused upload, from the server's `code` (or the HTTP status). */
function refusalWords(name, status, answer, maxBytes) {
  const code = answer?.code;
  if (code === "too_large" || (status === 413 && code !== "quota_exceeded")) {
    return `“${name}” is too big: files can be up to ${formatSize(maxBytes)}.`;
  }
  if (code === "quota_exceeded") return `“${name}” was not uploaded: you have used up your storage for files.`;
  if (code === "image_too_large") return `“${name}” was refused: the image has too many pixels.`;
  if (code === "forbidden") return `“${name}” was not uploaded: this room is read only.`;
  if (code === "not_found") return `“${name}” was not uploaded: the room is gone or closed to you.`;
  if (status === 0) return `“${name}” was not uploaded: the server could not be reached.`;
  const detail = typeof answer?.detail === "string" ? ` (${answer.detail})` : "";
  return `“${name}” was refused by the server${detail}.`;
}

/**
 * The files waiting in the composer: each uploads at once (with a progress bar) and is
 * sent with the next message. `take()` hands over the ids of the finished ones.
 */
export class FileTray {
  /**
   * @param {object} o
   * @param {object} o.session      shared/client.js Session (for the token)
   * @param {HTMLElement} o.tray     where chips of pending files go
   * @param {HTMLInputElement} o.input  the hidden <input type=file>
   * @param {HTMLElement} o.button   opens the file picker
   * @param {HTMLElement} o.dropZone where files may be dropped
   * @param {HTMLElement} o.pasteTarget  where pasted files are taken
   * @param {() => string|null} o.room   the open room's name (null: none, or read only)
   * @param {() => object} o.limits  the `hello` frame's limits
   * @param {(text: string, tone?: string) => void} o.notice
   * @param {() => void} o.changed  called when the tray's state changes
   */
  constructor({ session, tray, input, button, dropZone, pasteTarget, room, limits, notice, changed }) {
    Object.assign(this, { session, tray, input, button, room, limits, notice, changed });
    this.items = []; // {file, room, id|null, xhr, chip, done}
    button.addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      this.add([...input.files]);
      input.value = "";
    });
    dropZone.addEventListener("dragover", (event) => {
      if (!this.room() || !event.dataTransfer?.types.includes("Files")) return;
      event.preventDefault();
      dropZone.classList.add("dropping");
    });
    dropZone.addEventListener("dragleave", (event) => {
      if (!dropZone.contains(event.relatedTarget)) dropZone.classList.remove("dropping");
    });
    dropZone.addEventListener("drop", (event) => {
      dropZone.classList.remove("dropping");
      if (!this.room() || !event.dataTransfer?.files.length) return;
      event.preventDefault();
      this.add([...event.dataTransfer.files]);
    });
    pasteTarget.addEventListener("paste", (event) => {
      const files = [...(event.clipboardData?.files ?? [])];
      if (!files.length || !this.room()) return;
      event.preventDefault();
      this.add(files);
    });
  }

  get maxBytes() {
    return Number(this.limits()?.max_upload_bytes) || DEFAULT_MAX_UPLOAD;
  }

  get maxFiles() {
    return Number(this.limits()?.max_attachments) || DEFAULT_MAX_FILES;
  }

  /** Files finished uploading to `room` (ids), and whether others are still on their way. */
  state(room) {
    const here = this.items.filter((item) => item.room === room);
    return { ready: here.filter((item) => item.id).map((item) => item.id), uploading: here.some((item) => !item.done) };
  }

  /** Hand over the finished uploads to `room` (they go with the message being sent). */
  take(room) {
    const taken = this.items.filter((item) => item.room === room && item.id);
    for (const item of taken) this.remove(item);
    return taken.map((item) => item.id);
  }

  /** Show only the chips of `room` (on a room switch). */
  showRoom(room) {
    for (const item of this.items) item.chip.hidden = item.room !== room;
    this.tray.hidden = !this.items.some((item) => item.room === room);
  }

  add(files) {
    const room = this.room();
    if (!room) return;
    for (const file of files) {
      if (this.items.filter((item) => item.room === room).length >= this.maxFiles) {
        this.notice(`At most ${this.maxFiles} files go with one message.`, "warn");
        break;
      }
      if (file.size > this.maxBytes) {
        this.notice(`“${file.name}” is too big: files can be up to ${formatSize(this.maxBytes)}.`, "danger");
        continue;
      }
      this.upload(file, room);
    }
  }

  remove(item) {
    item.xhr?.abort();
    item.chip.remove();
    this.items = this.items.filter((other) => other !== item);
    this.showRoom(this.room());
    this.changed();
  }

  async upload(file, room) {
    const bar = h("progress", { class: "upload-progress", max: 100, value: 0 });
    const status = h("span", { class: "upload-status", text: "uploading…" });
    const item = { file, room, id: null, xhr: null, chip: null, done: false };
    item.chip = h(
      "li",
      { class: "upload", data: { name: file.name } },
      h("span", { class: "upload-name", text: file.name }),
      h("span", { class: "upload-size muted", text: formatSize(file.size) }),
      bar,
      status,
      h("button", {
        type: "button",
        class: "btn subtle small upload-remove",
        text: "×",
        attrs: { "aria-label": `Remove ${file.name}` },
        on: { click: () => this.remove(item) },
      }),
    );
    this.items.push(item);
    this.tray.append(item.chip);
    this.showRoom(this.room());
    this.changed();
    const form = new FormData();
    form.append("room", room);
    form.append("file", file, file.name);
    const token = await this.session.token();
    const xhr = new XMLHttpRequest();
    item.xhr = xhr;
    xhr.open("POST", "/api/files");
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) bar.value = Math.round((event.loaded / event.total) * 100);
    });
    xhr.addEventListener("loadend", () => {
      item.done = true;
      item.xhr = null;
      if (xhr.status === 201 && xhr.response?.id) {
        item.id = xhr.response.id;
        bar.value = 100;
        status.textContent = "ready";
        item.chip.classList.add("ready");
        this.changed();
        return;
      }
      if (xhr.status === 0 && !this.items.includes(item)) return; // removed: aborted
      this.notice(refusalWords(file.name, xhr.status, xhr.response, this.maxBytes), "danger");
      this.remove(item);
    });
    xhr.send(form);
  }
}

/** Fetch a file (or its thumbnail) with the token; a blob: URL of it. */
async function blobUrl(session, path) {
  const token = await session.token();
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return URL.createObjectURL(await response.blob());
}

/** A full-size view of an image over the page; a click or Escape closes it. */
function openViewer(session, file) {
  const img = h("img", { class: "file-full", alt: file.name });
  const close = () => {
    viewer.remove();
    if (img.src) URL.revokeObjectURL(img.src);
    document.removeEventListener("keydown", onKey);
  };
  const onKey = (event) => {
    if (event.key === "Escape") close();
  };
  const viewer = h(
    "div",
    { class: "file-viewer", attrs: { role: "dialog", "aria-label": file.name }, on: { click: close } },
    img,
    h("p", { class: "file-viewer-name", text: `${file.name} · ${formatSize(file.size)}` }),
  );
  document.body.append(viewer);
  document.addEventListener("keydown", onKey);
  blobUrl(session, `/api/files/${encodeURIComponent(file.id)}`).then(
    (url) => (img.src = url),
    () => (img.alt = `${file.name} could not be loaded`),
  );
}

/** Save a file under its name (fetched with the token, then handed to the browser). */
async function download(session, file, chip) {
  chip.disabled = true;
  try {
    const url = await blobUrl(session, `/api/files/${encodeURIComponent(file.id)}`);
    const link = h("a", { attrs: { href: url, download: file.name } });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch {
    chip.title = "The file could not be downloaded (deleted, or no longer yours to read).";
  } finally {
    chip.disabled = false;
  }
}

/** The element showing one attachment: a thumbnail button or a download chip. */
function attachmentElement(session, file) {
  if (file.thumbnail) {
    const img = h("img", {
      class: "file-thumb-img",
      alt: file.name,
      attrs: { width: file.width && Math.min(file.width, 320), loading: "lazy" },
    });
    blobUrl(session, file.thumbnail).then(
      (url) => (img.src = url),
      () => (img.alt = `${file.name} (preview unavailable)`),
    );
    return h(
      "button",
      { type: "button", class: "file-thumb", title: `${file.name} · ${formatSize(file.size)}`, on: { click: () => openViewer(session, file) } },
      img,
    );
  }
  const chip = h(
    "button",
    { type: "button", class: "file-chip", title: `Download ${file.name}` },
    h("span", { class: "file-chip-icon", text: "↓", attrs: { "aria-hidden": "true" } }),
    h("span", { class: "file-chip-name", text: file.name }),
    h("span", { class: "file-chip-size muted", text: formatSize(file.size) }),
  );
  chip.addEventListener("click", () => download(session, file, chip));
  return chip;
}

/** Show a message's attachments in its `.msg-files` element (once: repeats are ignored). */
export function showAttachments(session, li, attachments) {
  const box = li.querySelector(".msg-files");
  if (!box || box.dataset.filled || !attachments?.length) return;
  box.dataset.filled = "1";
  clear(box);
  for (const file of attachments) box.append(attachmentElement(session, file));
  box.hidden = false;
}
