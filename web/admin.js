// admin.js — the admin console (`/admin`): tasks with live progress, alerts, who is online
// (live, from presence frames), webhooks; and through its modules the last hour's charts
// and health (admin-charts.js), accounts (admin-people.js), bots (admin-bots.js) and the
// audit log (admin-audit.js).
//
// Uses the shared browser client (auth, reconnecting WebSocket), and shares the sign-in
// view, the connection indicator and the wording of errors with the chat (shared/). Every
// piece of server data reaches the page as text (textContent), never as HTML, and
// nothing is styled inline (the Content-Security-Policy forbids it): progress bars are
// <progress> elements, states are data attributes (`data-tone`, `data-status`) styled
// by shared/components.css and admin.css.
//
// Data flow: on start (and after every reconnect) the task list and the recent alerts are
// loaded over HTTP and the console asks to `watch` presence; after that `task`, `alert`,
// `presence_snapshot` and `presence_changes` frames keep them current. A task frame never moves a task backwards (a final status is final and
// progress only grows), so a snapshot racing a live frame cannot undo it.

import { ApiError, Connection, NetworkError, Session } from "/static/shared/client.js";
import { byId, clear, h, setText, showText, timeElement } from "/static/shared/dom.js";
import { couldNot, requestErrorWords } from "/static/shared/errors.js";
import { SignIn } from "/static/shared/signin.js";
import { ConnectionStatus } from "/static/shared/status.js";
import { Audit } from "/static/admin-audit.js";
import { Bots } from "/static/admin-bots.js";
import { Overview } from "/static/admin-charts.js";
import { Online, Users } from "/static/admin-people.js";

const ACTIVE = new Set(["queued", "running"]);
const RANK = { queued: 0, running: 1, succeeded: 2, failed: 2, cancelled: 2 };
// The colour of a task's status and of an alert's level (`data-tone`, components.css).
const STATUS_TONE = { queued: "neutral", running: "accent", succeeded: "ok", failed: "danger", cancelled: "warn" };
const LEVEL_TONE = { info: "neutral", warning: "warn", error: "danger", critical: "danger" };
const MAX_TASKS = 100;
const MAX_ALERTS = 100;

const session = new Session();
let conn = null; // the Connection while the console is open
let me = null;
let kinds = [];
const tasks = new Map(); // id -> {data, el}
const alertIds = new Set();
let tickTimer = null;
let rooms = [];

const $ = {
  console: byId("console-view"),
  meName: byId("me-name"),
  signout: byId("signout"),
  taskForm: byId("task-form"),
  taskKind: byId("task-kind"),
  taskParams: byId("task-params"),
  taskHelp: byId("task-kind-help"),
  taskStart: byId("task-start"),
  taskError: byId("task-form-error"),
  taskList: byId("task-list"),
  tasksEmpty: byId("tasks-empty"),
  tasksCount: byId("tasks-count"),
  alertList: byId("alert-list"),
  alertsEmpty: byId("alerts-empty"),
  alertsNew: byId("alerts-new"),
  moderateForm: byId("moderate-form"),
  moderateName: byId("moderate-name"),
  moderateUnban: byId("moderate-unban"),
  moderateStatus: byId("moderate-status"),
  webhookList: byId("webhook-list"),
  webhooksStatus: byId("webhooks-status"),
  webhooksRefresh: byId("webhooks-refresh"),
};

// --- signing in (shared/signin.js) -------------------------------------------------------

const signin = new SignIn({
  session,
  root: byId("signin-view"),
  splash: byId("splash"),
  brand: { name: "Chat", tag: "admin" },
  heading: "Admin console",
  lead: "Sign in with an administrator account to run tasks, watch alerts and manage who is online.",
  docTitle: "Admin console · Chat",
  register: null,
  role: "admin", // anyone else is told so; their session is left alone (a chat tab uses it)
  links: [{ href: "/", text: "Back to the chat" }],
  onEnter: enter,
  onLeave: leave,
});
const status = new ConnectionStatus(byId("conn"), byId("banner"));
const overview = new Overview(session, {
  charts: byId("charts"),
  health: byId("health"),
  status: byId("overview-status"),
});
const audit = new Audit(session, {
  form: byId("audit-form"),
  actor: byId("audit-actor"),
  action: byId("audit-action"),
  target: byId("audit-target"),
  since: byId("audit-since"),
  until: byId("audit-until"),
  list: byId("audit-list"),
  status: byId("audit-status"),
  more: byId("audit-more"),
});
const online = new Online(
  { rooms: byId("online-rooms"), status: byId("online-status") },
  { me: () => me, moderate },
);
const users = new Users(
  session,
  {
    form: byId("users-form"),
    q: byId("users-q"),
    role: byId("users-role"),
    state: byId("users-state"),
    list: byId("users-list"),
    status: byId("users-status"),
    more: byId("users-more"),
    secret: byId("users-secret"),
  },
  { me: () => me, onChange: () => audit.load() },
);
const bots = new Bots(
  session,
  {
    form: byId("bot-form"),
    name: byId("bot-name"),
    list: byId("bot-list"),
    status: byId("bots-status"),
    secret: byId("bots-secret"),
  },
  { onChange: () => audit.load() },
);

$.signout.addEventListener("click", async () => {
  $.signout.disabled = true;
  stopConsole();
  try {
    await signin.signOut(); // back to the form, via leave()
  } finally {
    $.signout.disabled = false;
  }
});

function enter(user) {
  me = user;
  $.console.hidden = false;
  document.title = "Admin console · Chat";
  setText($.meName, user.name);
  startConsole();
}

function leave() {
  stopConsole();
  me = null;
  $.console.hidden = true;
}

// --- the console's life ---------------------------------------------------------------

function startConsole() {
  stopConsole();
  tasks.clear();
  clear($.taskList);
  alertIds.clear();
  clear($.alertList);
  loadKinds();
  loadTasks();
  loadAlerts();
  loadWebhooks();
  overview.start();
  users.load();
  bots.load();
  audit.load();
  conn = new Connection(session);
  status.attach(conn);
  conn.on("hello", () => {
    // After a reconnect: catch up on what finished or was raised meanwhile, and watch
    // presence afresh (its snapshot replaces the list).
    online.watch(conn);
    loadTasks();
    loadAlerts();
    loadWebhooks();
  });
  conn.on("presence_snapshot", (frame) => online.snapshot(frame));
  conn.on("presence_changes", (frame) => online.change(frame));
  conn.on("presence", (frame) => online.change(frame));
  conn.on("state", (info) => {
    if (info.state !== "online") online.offline();
  });
  conn.on("task", (frame) => upsertTask(frame, "frame"));
  conn.on("alert", (frame) => {
    addAlert(frame, true);
    if (frame.text.startsWith("webhook ")) loadWebhooks(); // disabled, or its outbox full
  });
  conn.start();
  tickTimer = setInterval(tick, 1000);
}

function stopConsole() {
  clearInterval(tickTimer);
  tickTimer = null;
  overview.stop();
  status.detach();
  if (conn) {
    conn.dispose();
    conn = null;
  }
}

// --- tasks: the form ------------------------------------------------------------------

async function loadKinds() {
  try {
    const body = await session.api("/api/tasks/kinds");
    kinds = body.items ?? [];
  } catch (err) {
    showTaskError(couldNot("load the task kinds", err));
    return;
  }
  clear($.taskKind);
  for (const kind of kinds) $.taskKind.append(h("option", { value: kind.kind, text: kind.kind }));
  renderParams();
  loadRooms();
}

async function loadRooms() {
  try {
    const body = await session.api("/api/rooms");
    rooms = (body?.items ?? []).map((r) => r.name).filter(Boolean);
  } catch {
    rooms = [];
  }
  const list = document.getElementById("room-options");
  if (list) {
    clear(list);
    for (const name of rooms) list.append(h("option", { value: name }));
  }
}

$.taskKind.addEventListener("change", renderParams);

/** The schema of one parameter, with `anyOf: [X, null]` (optional) unwrapped. */
function unwrap(schema) {
  if (Array.isArray(schema.anyOf)) {
    const real = schema.anyOf.find((s) => s.type !== "null");
    if (real) return { ...real, ...schema, anyOf: undefined, nullable: true };
  }
  return schema;
}

function renderParams() {
  clear($.taskParams);
  $.taskError.hidden = true;
  const kind = kinds.find((k) => k.kind === $.taskKind.value);
  if (!kind) return;
  setText($.taskHelp, kind.description || "");
  const schema = kind.params ?? {};
  const required = new Set(schema.required ?? []);
  for (const [name, raw] of Object.entries(schema.properties ?? {})) {
    $.taskParams.append(paramField(name, unwrap(raw), required.has(name), kind));
  }
}

function paramField(name, schema, required, kind) {
  const id = `param-${name}`;
  const label = schema.title ?? name;
  const field = h("div", { class: "field", data: { param: name } });
  field.append(
    h("label", { attrs: { for: id } }, label, required ? null : h("span", { class: "optional", text: "optional" })),
  );
  let input;
  if (name === kind.upload_field) {
    input = h("textarea", {
      id,
      name,
      rows: 4,
      attrs: { placeholder: "username,password[,role]\nalice,a long password,user" },
    });
    const file = h("input", { type: "file", id: `${id}-file`, attrs: { accept: ".csv,text/csv,text/plain", "aria-label": `${label} file` } });
    field.classList.add("wide");
    field.append(input, h("div", { class: "file-row" }, h("span", { class: "muted", text: "or upload a file: " }), file));
  } else if (Array.isArray(schema.enum)) {
    input = h("select", { id, name });
    for (const option of schema.enum) input.append(h("option", { value: option, text: option }));
    if (schema.default !== undefined) input.value = schema.default;
  } else if (schema.type === "integer" || schema.type === "number") {
    input = h("input", {
      id,
      name,
      type: "number",
      attrs: {
        min: schema.minimum ?? schema.exclusiveMinimum,
        max: schema.maximum ?? schema.exclusiveMaximum,
        step: schema.type === "integer" ? 1 : "any",
        placeholder: schema.default === null || schema.default === undefined ? "" : String(schema.default),
      },
    });
    if (schema.default !== undefined && schema.default !== null) input.value = String(schema.default);
  } else {
    input = h("input", { id, name, type: "text", attrs: { maxlength: schema.maxLength, autocomplete: "off" } });
    if (name === "room") {
      input.setAttribute("list", "room-options");
      field.append(h("datalist", { id: "room-options" }, rooms.map((r) => h("option", { value: r }))));
    }
    if (schema.default) input.value = schema.default;
  }
  input.dataset.kind = schema.type ?? "string";
  if (schema.nullable) input.dataset.nullable = "1";
  field.insertBefore(input, field.children[1] ?? null);
  if (schema.description) field.append(h("p", { class: "hint", text: schema.description }));
  return field;
}

function showTaskError(text) {
  showText($.taskError, text);
}

$.taskForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const kind = kinds.find((k) => k.kind === $.taskKind.value);
  if (!kind) return;
  const params = {};
  let file = null;
  for (const field of $.taskParams.querySelectorAll("[data-param]")) {
    const name = field.dataset.param;
    const input = field.querySelector("input:not([type=file]), select, textarea");
    const picker = field.querySelector("input[type=file]");
    if (picker?.files?.length) file = picker.files[0];
    const value = input.value;
    if (value === "") continue; // the server's default
    params[name] = input.dataset.kind === "integer" || input.dataset.kind === "number" ? Number(value) : value;
  }
  $.taskStart.disabled = true;
  showTaskError("");
  try {
    let view;
    if (file && kind.upload_field) {
      delete params[kind.upload_field];
      const form = new FormData();
      form.set("kind", kind.kind);
      form.set("params", JSON.stringify(params));
      form.set("file", file);
      view = await session.api("/api/tasks", { method: "POST", form });
    } else {
      view = await session.api("/api/tasks", { method: "POST", json: { kind: kind.kind, params } });
    }
    upsertTask(view, "view");
    const picker = $.taskParams.querySelector("input[type=file]");
    if (picker) picker.value = "";
  } catch (err) {
    showTaskError(requestErrorWords(err));
  } finally {
    $.taskStart.disabled = false;
  }
});

// --- tasks: the list ------------------------------------------------------------------

async function loadTasks() {
  try {
    const body = await session.api("/api/tasks", { query: { limit: 50 } });
    // Oldest first, so the newest ends up on top.
    for (const view of (body.items ?? []).slice().reverse()) upsertTask(view, "view");
  } catch (err) {
    if (!(err instanceof NetworkError)) showTaskError(couldNot("load tasks", err)); // else: the banner says so
  }
  renderCount();
}

/** Merge a task view (HTTP) or frame (WebSocket) into the list; never move it backwards. */
function upsertTask(incoming, source) {
  const entry = tasks.get(incoming.id);
  if (!entry) {
    const data = { created_at: incoming.created_at ?? incoming.ts, ...incoming };
    const el = h("li", { class: "task", data: { id: incoming.id } });
    tasks.set(incoming.id, { data, el });
    $.taskList.prepend(el);
    trimTasks();
    renderTask(tasks.get(incoming.id));
    if (!ACTIVE.has(data.status) && source === "frame") fetchTask(incoming.id);
    renderCount();
    return;
  }
  const old = entry.data;
  const oldRank = RANK[old.status] ?? 0;
  const newRank = RANK[incoming.status] ?? 0;
  if (newRank < oldRank) return; // a late or stale state: ignore
  if (oldRank === 2 && newRank === 2 && old.status !== incoming.status) return;
  const merged = { ...old };
  for (const [key, value] of Object.entries(incoming)) {
    if (value !== undefined && value !== null) merged[key] = value;
  }
  if (newRank === oldRank && newRank === 1 && (incoming.progress ?? 0) < (old.progress ?? 0)) {
    merged.progress = old.progress;
    merged.detail = old.detail;
  }
  entry.data = merged;
  renderTask(entry);
  if (newRank === 2 && oldRank < 2) {
    renderCount();
    if (source === "frame") fetchTask(incoming.id); // the result is not in the frame
  }
}

async function fetchTask(id) {
  try {
    upsertTask(await session.api(`/api/tasks/${encodeURIComponent(id)}`), "view");
  } catch {
    /* the frame's data stays; a reload will fill in the rest */
  }
}

function trimTasks() {
  if (tasks.size <= MAX_TASKS) return;
  for (const [id, entry] of [...tasks.entries()].reverse()) {
    if (tasks.size <= MAX_TASKS) break;
    if (ACTIVE.has(entry.data.status)) continue;
    entry.el.remove();
    tasks.delete(id);
  }
}

function renderCount() {
  const active = [...tasks.values()].filter((t) => ACTIVE.has(t.data.status)).length;
  setText($.tasksCount, tasks.size ? `${active} active · ${tasks.size} shown` : "");
  $.tasksEmpty.hidden = tasks.size > 0;
}

function percent(progress) {
  return `${Math.floor((progress ?? 0) * 100)} %`;
}

function renderTask(entry) {
  const t = entry.data;
  const el = entry.el;
  el.dataset.status = t.status;
  el.dataset.tone = STATUS_TONE[t.status] ?? "neutral";
  el.dataset.kind = t.kind;
  const statusText = t.status === "running" && t.cancel_requested ? "cancelling" : t.status;
  const head = h(
    "div",
    { class: "task-head" },
    h("span", { class: "task-kind", text: t.kind }),
    h("code", { class: "task-id", text: t.id.slice(0, 8), attrs: { title: t.id } }),
    t.user?.name ? h("span", { class: "task-user muted", text: `by ${t.user.name}` }) : null,
    summaryOfParams(t),
    h("span", { class: "badge status", data: { status: t.status, tone: STATUS_TONE[t.status] ?? "neutral" }, text: statusText }),
  );
  const bar = h("progress", {
    class: "bar",
    max: 1,
    value: t.progress ?? 0,
    attrs: { "aria-label": `${t.kind} ${t.id.slice(0, 8)} progress` },
  });
  const meta = h(
    "div",
    { class: "task-meta" },
    h("span", { class: "pct", text: percent(t.progress) }),
    h("span", { class: "elapsed", text: elapsedText(t) }),
    t.detail ? h("span", { class: "detail", text: t.detail }) : null,
  );
  const actions = h("div", { class: "task-actions" });
  if (ACTIVE.has(t.status)) {
    actions.append(
      h("button", {
        type: "button",
        class: "btn small cancel",
        text: t.cancel_requested ? "Cancelling…" : "Cancel",
        disabled: Boolean(t.cancel_requested),
        on: { click: (e) => cancelTask(t.id, e.currentTarget) },
      }),
    );
  }
  if (t.status === "succeeded" && t.kind === "export") {
    actions.append(
      h("button", {
        type: "button",
        class: "btn small primary download",
        text: "Download",
        on: { click: (e) => download(t, e.currentTarget) },
      }),
    );
  }
  const parts = [h("div", { class: "task-row" }, head, actions), bar, meta];
  if (t.error) parts.push(h("p", { class: "task-error", text: t.error }));
  const result = resultOf(t);
  if (result) parts.push(result);
  el.replaceChildren(...parts);
}

function summaryOfParams(t) {
  const p = t.params;
  if (!p) return null;
  let text = "";
  if (t.kind === "export") text = `#${p.room} · ${p.format}`;
  else if (t.kind === "purge") text = `older than ${p.older_than_days} d${p.room ? ` · #${p.room}` : ""}`;
  else if (t.kind === "demo") text = `${p.steps} × ${p.delay} s${p.fail_at != null ? ` · fails at ${Math.round(p.fail_at * 100)} %` : ""}`;
  return text ? h("span", { class: "task-params muted", text }) : null;
}

function resultOf(t) {
  const r = t.result;
  if (!r || t.status !== "succeeded") return null;
  if (t.kind === "export") {
    return h("p", { class: "task-result", text: `${r.rows} messages · ${formatBytes(r.bytes)}` });
  }
  if (t.kind === "purge") return h("p", { class: "task-result", text: `${r.deleted} messages deleted` });
  if (t.kind === "import_users") {
    const box = h("div", { class: "task-result" });
    box.append(h("p", { text: `${r.created} created, ${r.failed} failed of ${r.total} rows` }));
    if (r.errors?.length) {
      const list = h("ul", { class: "row-errors" });
      for (const e of r.errors) {
        list.append(h("li", {}, h("span", { class: "line", text: `line ${e.line}` }), ` ${e.username || "(no name)"}: ${e.error}`));
      }
      if (r.errors_truncated) list.append(h("li", { class: "muted", text: "… more rows failed" }));
      box.append(h("details", {}, h("summary", { text: `Rows that failed (${r.failed})` }), list));
    }
    return box;
  }
  return null;
}

function formatBytes(n) {
  if (!Number.isFinite(n)) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function seconds(iso) {
  const t = iso ? Date.parse(iso) : NaN;
  return Number.isNaN(t) ? null : t / 1000;
}

function duration(raw, precise = false) {
  const exact = Math.max(0, raw);
  const secs = Math.round(exact);
  const h_ = Math.floor(secs / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = secs % 60;
  if (precise && exact < 10) return `${exact.toFixed(1)}s`;
  if (h_) return `${h_}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

function elapsedText(t) {
  const now = Date.now() / 1000;
  const started = seconds(t.started_at);
  const finished = seconds(t.finished_at);
  if (t.status === "queued") {
    const created = seconds(t.created_at);
    return created ? `waiting ${duration(now - created)}` : "waiting";
  }
  if (!started) return "";
  if (finished) return `took ${duration(finished - started, true)}`;
  return `running ${duration(now - started)}`;
}

function tick() {
  for (const entry of tasks.values()) {
    if (ACTIVE.has(entry.data.status)) {
      const el = entry.el.querySelector(".elapsed");
      if (el) setText(el, elapsedText(entry.data));
    }
  }
}

async function cancelTask(id, button) {
  button.disabled = true;
  setText(button, "Cancelling…");
  try {
    upsertTask(await session.api(`/api/tasks/${encodeURIComponent(id)}/cancel`, { method: "POST" }), "view");
  } catch (err) {
    button.disabled = false;
    setText(button, "Cancel");
    if (err instanceof ApiError && err.status === 409) fetchTask(id);
    else showTaskError(couldNot("cancel the task", err));
  }
}

/** Fetch the export with the bearer token and save it (a plain link could not authenticate). */
async function download(t, button) {
  button.disabled = true;
  const label = button.textContent;
  setText(button, "Downloading…");
  try {
    const response = await session.fetch(`/api/tasks/${encodeURIComponent(t.id)}/result`);
    if (!response.ok) await Session.parse(response); // throws ApiError with the detail
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = h("a", { href: url, download: filenameOf(response, t), hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30_000);
  } catch (err) {
    showTaskError(couldNot("download the export", err));
  } finally {
    button.disabled = false;
    setText(button, label);
  }
}

function filenameOf(response, t) {
  const header = response.headers.get("Content-Disposition") ?? "";
  const star = header.match(/filename\*=utf-8''([^;]+)/i);
  if (star) {
    try {
      return decodeURIComponent(star[1]);
    } catch {
      /* fall through */
    }
  }
  const plain = header.match(/filename="?([^";]+)"?/i);
  return plain ? plain[1] : `export-${t.id.slice(0, 8)}.${t.params?.format ?? "jsonl"}`;
}

// --- alerts -------------------------------------------------------------------------

async function loadAlerts() {
  try {
    const body = await session.api("/api/alerts", { query: { limit: 50 } });
    for (const alert of (body.items ?? []).slice().reverse()) addAlert(alert, false);
  } catch {
    /* shown as empty; the next reconnect retries */
  }
  $.alertsEmpty.hidden = $.alertList.children.length > 0;
}

function addAlert(alert, live) {
  if (alert.id !== undefined && alert.id !== null) {
    if (alertIds.has(alert.id)) return;
    alertIds.add(alert.id);
  }
  const item = h(
    "li",
    { class: ["alert", live ? "fresh" : ""], data: { level: alert.level, tone: LEVEL_TONE[alert.level] ?? "neutral" } },
    h("span", { class: "badge level", text: alert.level }),
    h("span", { class: "alert-text", text: alert.text }),
    timeElement(alert.ts, "alert-time"),
  );
  $.alertList.prepend(item);
  while ($.alertList.children.length > MAX_ALERTS) $.alertList.lastElementChild.remove();
  $.alertsEmpty.hidden = true;
  if (live) {
    const fresh = $.alertList.querySelectorAll(".alert.fresh").length;
    setText($.alertsNew, `${fresh} new`);
    $.alertsNew.hidden = false;
    setTimeout(() => {
      item.classList.remove("fresh");
      const left = $.alertList.querySelectorAll(".alert.fresh").length;
      setText($.alertsNew, `${left} new`);
      $.alertsNew.hidden = left === 0;
    }, 15_000);
  }
}

// --- webhooks: their state and recent delivery attempts ------------------------------

const WEBHOOK_TONE = { active: "ok", disabled: "danger" };
const ATTEMPT_TONE = { delivered: "ok", failed: "danger", dropped: "danger", skipped: "warn" };

async function loadWebhooks() {
  if ($.console.hidden) return;
  try {
    const body = await session.api("/api/webhooks");
    clear($.webhookList);
    for (const hook of body.items ?? []) $.webhookList.append(webhookRow(hook));
    setText($.webhooksStatus, body.items?.length ? "" : "No webhooks registered.");
  } catch (err) {
    setText($.webhooksStatus, couldNot("load the webhooks", err));
  }
}

function webhookRow(hook) {
  const attempts = h("ul", { class: "attempts", hidden: true });
  const show = h("button", { type: "button", class: "btn small", text: "Deliveries" });
  show.addEventListener("click", async () => {
    attempts.hidden = !attempts.hidden;
    if (!attempts.hidden) await loadAttempts(hook, attempts);
  });
  const row = h(
    "li",
    { class: "webhook", data: { webhook: hook.id, state: hook.state } },
    h(
      "div",
      { class: "webhook-head" },
      h("span", { class: "badge", data: { tone: WEBHOOK_TONE[hook.state] ?? "neutral" }, text: hook.state }),
      h("span", { class: "webhook-bot", text: hook.bot.name }),
      h("span", { class: "muted", text: hook.events.join(", ") }),
    ),
    h("div", { class: "webhook-url muted small-print", text: hook.url }),
    h("div", { class: "small-print", text: `${hook.pending} waiting · ${hook.failures} failures in a row` }),
    hook.disabled_reason ? h("div", { class: "webhook-reason small-print", text: hook.disabled_reason }) : null,
    h("div", { class: "row" }, show, hook.state === "disabled" ? enableButton(hook) : null),
    attempts,
  );
  return row;
}

function enableButton(hook) {
  const button = h("button", { type: "button", class: "btn small", text: "Enable" });
  button.addEventListener("click", async () => {
    try {
      await session.api(`/api/webhooks/${hook.id}/enable`, { method: "POST" });
      loadWebhooks();
    } catch (err) {
      setText($.webhooksStatus, couldNot("enable the webhook", err));
    }
  });
  return button;
}

async function loadAttempts(hook, list) {
  clear(list);
  try {
    const body = await session.api(`/api/webhooks/${hook.id}/deliveries`, { query: { limit: 20 } });
    if (!body.items?.length) list.append(h("li", { class: "muted", text: "No attempts yet." }));
    for (const a of body.items ?? []) {
      const what = a.error ?? (a.http_status ? `HTTP ${a.http_status}` : "");
      list.append(
        h(
          "li",
          { class: "attempt", data: { status: a.status } },
          h("span", { class: "badge", data: { tone: ATTEMPT_TONE[a.status] ?? "neutral" }, text: a.status }),
          h("span", { text: `${a.event} #${a.room ?? "?"} seq ${a.seq} try ${a.attempt}` }),
          h("span", { class: "muted", text: what }),
          timeElement(a.ts, "attempt-time"),
        ),
      );
    }
  } catch (err) {
    list.append(h("li", { class: "muted", text: couldNot("load the deliveries", err) }));
  }
}

$.webhooksRefresh.addEventListener("click", loadWebhooks);

// --- who is online: live from presence frames (admin-people.js) -----------------------

async function moderate(username, action) {
  const words = { kick: "kicked (every session closed)", ban: "banned", unban: "unbanned" };
  try {
    await session.api(`/api/admin/users/${encodeURIComponent(username)}/${action}`, { method: "POST" });
    setText($.moderateStatus, `${username} was ${words[action]}.`);
  } catch (err) {
    setText($.moderateStatus, couldNot(`${action} ${username}`, err, { 404: `There is no user called “${username}”.` }));
  }
  users.load();
  audit.load();
}

$.moderateForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $.moderateName.value.trim();
  if (name) moderate(name, "ban");
});

$.moderateUnban.addEventListener("click", () => {
  const name = $.moderateName.value.trim();
  if (name) moderate(name, "unban");
});

// --- start --------------------------------------------------------------------------

signin.start(); // resumes the session kept for this tab, or shows the form
