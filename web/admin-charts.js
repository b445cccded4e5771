// admin-charts.js — the console's last hour and the health of the parts.
//
// The charts are SVG built with DOM APIs (createElementNS, setAttribute): no library,
// no CDN, no innerHTML; colours come from classes in admin.css (the CSP forbids inline
// styles). Data: `GET /api/admin/stats` (10 s samples kept by the server itself, every
// process merged when it runs with Redis) and `GET /api/admin/health`, both reloaded
// every `REFRESH` ms while the console is open.

import { clear, h, setText } from "/static/shared/dom.js";
import { couldNot } from "/static/shared/errors.js";
import { num } from "/static/admin-kit.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 320;
const H = 110;
const PAD = { left: 4, right: 4, top: 8, bottom: 16 };
const HOUR = 3600;
const REFRESH = 10_000;
const MAX_ERROR_SERIES = 5;

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const child of children) if (child) el.append(child);
  return el;
}

/** One chart: a titled card with its current value, the plot, and a legend. */
function chart({ id, title, unit, series, now, bars = null, max = null }) {
  const start = now - HOUR;
  const x = (ts) => PAD.left + ((ts - start) / HOUR) * (W - PAD.left - PAD.right);
  let top = max ?? 0;
  for (const s of series) for (const [, v] of s.points) if (v !== null && v > top) top = v;
  if (bars) for (const b of bars) top = Math.max(top, b.total);
  top = top > 0 ? top * 1.1 : 1;
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img", "aria-label": title });
  plot.append(
    svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(0), y2: y(0), class: "axis" }),
    svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(top / 1.1), y2: y(top / 1.1), class: "gridline" }),
  );
  for (const [label, at] of [["−60 min", start], ["−30", now - HOUR / 2], ["now", now]]) {
    const anchor = at === start ? "start" : at === now ? "end" : "middle";
    plot.append(svg("text", { x: x(at), y: H - 3, class: "tick", "text-anchor": anchor }, document.createTextNode(label)));
  }
  plot.append(
    svg("text", { x: PAD.left + 2, y: y(top / 1.1) - 2, class: "tick" }, document.createTextNode(`${num(top / 1.1)} ${unit}`)),
  );
  if (bars) {
    const width = Math.max(1, ((60 / HOUR) * (W - PAD.left - PAD.right)) - 1);
    for (const b of bars) {
      let base = 0;
      for (const [key, value] of b.parts) {
        if (!value) continue;
        plot.append(
          svg("rect", { x: x(b.ts), y: y(base + value), width, height: y(base) - y(base + value), class: `bar bar-${key}` }),
        );
        base += value;
      }
    }
  }
  series.forEach((s, i) => {
    // A gap (no sample, or no value) breaks the line instead of drawing across it.
    let run = [];
    const flush = () => {
      if (run.length === 1) plot.append(svg("circle", { cx: run[0][0], cy: run[0][1], r: 1.5, class: `dot series-${s.tone ?? i}` }));
      else if (run.length > 1) plot.append(svg("polyline", { points: run.map((p) => p.join(",")).join(" "), class: `line series-${s.tone ?? i}` }));
      run = [];
    };
    let prev = null;
    for (const [ts, v] of s.points) {
      if (v === null || (prev !== null && ts - prev > s.step * 2.5)) flush();
      if (v !== null) run.push([x(ts).toFixed(1), y(v).toFixed(1)]);
      prev = ts;
    }
    flush();
  });
  const legend = h("ul", { class: "legend" });
  const items = bars ? bars.legend : series;
  items.forEach((s, i) =>
    legend.append(
      h(
        "li",
        {},
        h("span", { class: `swatch series-${s.tone ?? i}` }),
        h("span", { class: "legend-name", text: s.name }),
        h("span", { class: "legend-value", text: s.value }),
      ),
    ),
  );
  return h("figure", { class: "chart", data: { chart: id } }, h("figcaption", { text: title }), plot, legend);
}

function last(points) {
  for (let i = points.length - 1; i >= 0; i--) if (points[i][1] !== null) return points[i][1];
  return null;
}

/** The five charts for one `stats` answer. */
export function renderCharts(root, stats) {
  const step = stats.interval;
  const s = stats.samples;
  const now = stats.now;
  const rate = s.map((x) => [x.ts, x.messages / step]);
  const conns = s.map((x) => [x.ts, x.connections]);
  const p50 = s.map((x) => [x.ts, x.ack_p50_ms]);
  const p99 = s.map((x) => [x.ts, x.ack_p99_ms]);
  const totals = new Map();
  for (const x of s) for (const [code, n] of Object.entries(x.errors)) totals.set(code, (totals.get(code) ?? 0) + n);
  const codes = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, MAX_ERROR_SERIES).map(([c]) => c);
  const errorSeries = codes.map((code, i) => ({
    name: code,
    value: `${totals.get(code).toLocaleString()} in the hour`,
    tone: `e${i}`,
    step,
    points: s.map((x) => [x.ts, (x.errors[code] ?? 0) / step]),
  }));
  const tasks = stats.tasks.map((b) => ({
    ts: b.ts,
    total: b.succeeded + b.failed + b.cancelled,
    parts: [["ok", b.succeeded], ["failed", b.failed], ["cancelled", b.cancelled]],
  }));
  const sum = (key) => stats.tasks.reduce((n, b) => n + b[key], 0);
  tasks.legend = [
    { name: "succeeded", value: String(sum("succeeded")), tone: "ok" },
    { name: "failed", value: String(sum("failed")), tone: "failed" },
    { name: "cancelled", value: String(sum("cancelled")), tone: "cancelled" },
  ];
  clear(root);
  root.append(
    chart({ id: "messages", title: "Messages stored per second", unit: "/s", now, series: [{ name: "messages/s", value: num(last(rate)), step, points: rate }] }),
    chart({ id: "connections", title: "Open connections", unit: "", now, series: [{ name: "connections", value: num(last(conns), 0), step, points: conns }] }),
    chart({
      id: "latency",
      title: "Ack latency (send to commit)",
      unit: "ms",
      now,
      series: [
        { name: "p50", value: `${num(last(p50), 2)} ms`, step, points: p50 },
        { name: "p99", value: `${num(last(p99), 2)} ms`, step, points: p99, tone: 2 },
      ],
    }),
    chart({
      id: "errors",
      title: "Errors and refusals by code, per second",
      unit: "/s",
      now,
      series: errorSeries.length ? errorSeries : [{ name: "none in the last hour", value: "", step, points: [] }],
    }),
    chart({ id: "tasks", title: "Tasks finished per minute", unit: "", now, series: [], bars: tasks }),
  );
  const scope =
    stats.scope === "site"
      ? `Every process of the site (${stats.processes}), merged; latency lines show the slowest process.`
      : "This process (one process, or no Redis to share samples through).";
  root.append(h("p", { class: "muted small-print chart-note", text: `${scope} A sample every ${step} s.` }));
}

const CHECK_TONE = { ok: "ok", unavailable: "danger" };

/** The health card: each check with its latency, the processes, the task workers. */
export function renderHealth(root, health) {
  clear(root);
  const checks = h("ul", { class: "health-list", attrs: { "aria-label": "Checks" } });
  for (const [name, check] of Object.entries(health.checks)) {
    const what = name === "broker" ? `broker (${health.broker})` : name;
    checks.append(
      h(
        "li",
        { class: "health-item", data: { check: name, status: check.status } },
        h("span", { class: "badge", data: { tone: CHECK_TONE[check.status] ?? "neutral" }, text: check.status }),
        h("span", { class: "health-name", text: what }),
        h("span", { class: "muted", text: check.latency_ms === null ? (check.error ?? "") : `${num(check.latency_ms, 2)} ms` }),
      ),
    );
  }
  const procs = h("ul", { class: "health-list", attrs: { "aria-label": "Processes" } });
  for (const p of health.processes) {
    procs.append(
      h(
        "li",
        { class: "health-item", data: { process: p.name, alive: p.alive } },
        h("span", { class: "badge", data: { tone: p.alive ? "ok" : "warn" }, text: p.alive ? "alive" : "silent" }),
        h("span", { class: "health-name mono", text: p.name }),
        h("span", { class: "muted", text: p.this ? "answered this" : `seen ${new Date(p.last_seen).toLocaleTimeString()}` }),
      ),
    );
  }
  const workers = h("ul", { class: "health-list", attrs: { "aria-label": "Task workers" } });
  for (const w of health.task_workers) {
    workers.append(
      h(
        "li",
        { class: "health-item", data: { worker: w.name, alive: w.alive } },
        h("span", { class: "badge", data: { tone: w.alive ? "ok" : "danger" }, text: w.alive ? "beating" : "stale" }),
        h("span", { class: "health-name mono", text: w.name }),
        h("span", { class: "muted", text: `${w.active_tasks} active` }),
      ),
    );
  }
  if (!health.task_workers.length) workers.append(h("li", { class: "muted", text: "No task running now." }));
  root.append(
    h("p", { class: "health-status", data: { status: health.status } },
      h("span", { class: "badge strong", data: { tone: health.status === "ok" ? "ok" : "danger" }, text: health.status === "ok" ? "All good" : "Degraded" }),
      health.draining ? h("span", { class: "muted", text: " draining" }) : null,
    ),
    h("h3", { class: "section-title", text: "Dependencies" }),
    checks,
    h("h3", { class: "section-title", text: "Processes (seen sampling)" }),
    procs,
    h("h3", { class: "section-title", text: "Task workers (seen by heartbeat)" }),
    workers,
  );
}

/** Load and redraw both every REFRESH ms until `stop()`. */
export class Overview {
  constructor(session, { charts, health, status }) {
    this.session = session;
    this.els = { charts, health, status };
    this.timer = null;
  }

  start() {
    this.stop();
    this.load();
    this.timer = setInterval(() => this.load(), REFRESH);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async load() {
    try {
      const [stats, health] = await Promise.all([
        this.session.api("/api/admin/stats"),
        this.session.api("/api/admin/health"),
      ]);
      renderCharts(this.els.charts, stats);
      renderHealth(this.els.health, health);
      setText(this.els.status, `Updated ${new Date().toLocaleTimeString()}`);
    } catch (err) {
      setText(this.els.status, couldNot("load the charts and health", err));
    }
  }
}
