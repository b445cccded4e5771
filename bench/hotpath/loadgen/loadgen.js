'use strict';
// Load generator for bench/hotpath (driven by bench/hotpath/run.py; not meant to be run by hand).
//
//   node loadgen.js SPEC.json
//
// SPEC: {url, mode: "traffic" | "connect" | "churn", proc, deflate, ...mode fields}.
// It talks JSON lines: it prints events on stdout ({"event": ...}) and reads commands
// on stdin ({"cmd": ...}). Times are CLOCK_MONOTONIC (process.hrtime), which every
// process on the machine shares, so a send time embedded in a message body by one
// process can be compared with the arrival time in another, and the orchestrator can
// name a start instant ("start_ns") that every generator process honours.
//
// traffic: connect spec.conns ([{token, rooms, send}]), join their rooms, print
//   "ready"; then each {"cmd":"traffic", start_ns, warmup, duration, drain,
//   window | rate, max_inflight} runs one measured phase and prints "result";
//   {"cmd":"quit"} closes everything.
// connect: print "ready"; {"cmd":"connect", start_ns, timeout, concurrency} opens
//   spec.conns as fast as allowed (each done at its `hello`) and prints "connected";
//   {"cmd":"quit"} closes them.
// churn: print "ready"; {"cmd":"churn", ...} keeps about `target` sockets open,
//   opening and closing `rate` a second, each sending every few seconds; prints a
//   "bucket" per `bucket` seconds and a "result" after closing every socket.

const fs = require('fs');
const readline = require('readline');
const WebSocket = require('ws');

const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const PROC = spec.proc || 0;

// --- clocks, output ---------------------------------------------------------------

// performance.now() is process.hrtime() less this process's origin: add it back once.
const { performance } = require('perf_hooks');
const HR_OFFSET_US = Number(process.hrtime.bigint() / 1000n) - performance.now() * 1000;
function nowUs() {
  return performance.now() * 1000 + HR_OFFSET_US;
}
function nowNs() {
  return process.hrtime.bigint();
}
function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}
function untilUs(targetUs) {
  return sleep((targetUs - nowUs()) / 1000);
}

// --- latency histogram: 10 us buckets below 1 ms, then 2 % wide buckets ------------

const LOG_STEP = Math.log(1.02);
const HIST_SIZE = 1024; // index 1023 is about 2e8 s: nothing is clamped in practice
class Hist {
  constructor() {
    this.b = new Float64Array(HIST_SIZE);
    this.n = 0;
    this.max = 0;
  }
  add(us) {
    if (!(us >= 0)) us = 0;
    let i = us < 1000 ? Math.floor(us / 10) : 100 + Math.floor(Math.log(us / 1000) / LOG_STEP);
    if (i >= HIST_SIZE) i = HIST_SIZE - 1;
    this.b[i] += 1;
    this.n += 1;
    if (us > this.max) this.max = us;
  }
  toJSON() {
    const buckets = {};
    for (let i = 0; i < HIST_SIZE; i++) if (this.b[i]) buckets[i] = this.b[i];
    return { n: this.n, max_us: this.max, buckets };
  }
}

function bump(obj, key, by = 1) {
  obj[key] = (obj[key] || 0) + by;
}

// --- connections ------------------------------------------------------------------

let nextConnId = 0;
const BODY_PAD = 'x'.repeat(Math.max(0, (spec.body_bytes || 64) - 24));

class Conn {
  constructor(token, rooms, sends) {
    this.id = nextConnId++;
    this.token = token;
    this.rooms = rooms || [];
    this.sends = !!sends;
    this.ws = null;
    this.open = false; // hello received
    this.joinedRooms = 0;
    this.inflight = new Map(); // ref -> send time (us)
    this.counter = 0;
    this.lastSeq = new Map();
    this.seq1 = undefined; // last seq seen when the socket is in one room
    this.room = 0; // round robin over rooms for sends
    this.closedCode = null;
    this.timer = null;
    this.churnRoom = null;
  }
}

// The current measured phase (traffic) or churn state: frame handlers report into it.
let phase = null;
const totals = { errors: {}, closes: {}, gaps: 0, out_of_order: 0, unexpected: 0 };

function sendFrame(c) {
  const room = c.rooms[c.room];
  c.room = (c.room + 1) % c.rooms.length;
  const ref = `${PROC}.${c.id}.${c.counter++}`;
  const t = nowUs();
  c.inflight.set(ref, t);
  const body = `${t.toFixed(1)}|${BODY_PAD}`;
  c.ws.send(`{"type":"send","room":${JSON.stringify(room)},"body":"${body}","ref":"${ref}"}`);
  if (phase) phase.onSend(c, t, room);
}

// Deliveries are most of what the generator reads, so a `message` frame laid out as
// both servers write it ({"type":"message","room":"...",...,"seq":N,...,"body":"T|...)
// is read by scanning its bytes, without JSON.parse or allocations; any other frame,
// or one that does not look exactly like that, is parsed in full.
const PREFIX = Buffer.from('{"type":"message","room":"');
const BODY_KEY = Buffer.from('"body":"');
const Q = 0x22; // "
let fRoom = '';
let fSeq = 0;
let fSent = NaN;

// Index just past `"key":` (key given as byte codes) at or after `from`, or -1.
function after(data, from, k0, k1, k2, k3) {
  const n = data.length - 6;
  for (let i = from; i < n; i++) {
    if (data[i] === Q && data[i + 1] === k0 && data[i + 2] === k1 && data[i + 3] === k2) {
      if (k3 === 0) {
        if (data[i + 4] === Q && data[i + 5] === 0x3a) return i + 6;
      } else if (data[i + 4] === k3 && data[i + 5] === Q && data[i + 6] === 0x3a) {
        return i + 7;
      }
    }
  }
  return -1;
}

// `room`: the one room the socket joined, or null to read the room from the frame.
function fastMessage(data, room) {
  const len = data.length;
  if (len < 60) return false;
  for (let i = 0; i < PREFIX.length; i++) if (data[i] !== PREFIX[i]) return false;
  let i = PREFIX.length;
  const roomStart = i;
  while (i < len && data[i] !== Q) {
    if (data[i] === 0x5c) return false; // an escape: let JSON.parse do it
    i++;
  }
  if (i >= len) return false;
  const roomEnd = i;
  i = after(data, roomEnd, 0x73, 0x65, 0x71, 0); // "seq":
  if (i < 0) return false;
  let seq = 0;
  for (; i < len; i++) {
    const d = data[i] - 48;
    if (d < 0 || d > 9) break;
    seq = seq * 10 + d;
  }
  i = data.indexOf(BODY_KEY, i); // past "user":{...}: a native search is cheaper
  if (i < 0) return false;
  i += BODY_KEY.length;
  // The send time: digits, one dot, digits, then '|'.
  let whole = 0;
  let frac = 0;
  let scale = 1;
  let dot = false;
  const stop = Math.min(len, i + 32);
  for (; i < stop; i++) {
    const ch = data[i];
    if (ch === 0x7c) break;
    if (ch === 0x2e && !dot) {
      dot = true;
      continue;
    }
    const d = ch - 48;
    if (d < 0 || d > 9) return false;
    if (dot) {
      scale /= 10;
      frac += d * scale;
    } else whole = whole * 10 + d;
  }
  if (i >= stop) return false;
  fRoom = room !== null ? room : data.latin1Slice(roomStart, roomEnd);
  fSeq = seq;
  fSent = whole + frac;
  return true;
}

function onMessage(c, now, room, seq, sent) {
  // Per room, each receiver must see seq grow by one (after the first it sees).
  let last;
  if (c.rooms.length === 1 && room === c.rooms[0]) {
    last = c.seq1;
    c.seq1 = seq;
  } else {
    last = c.lastSeq.get(room);
    c.lastSeq.set(room, seq);
  }
  if (last !== undefined) {
    if (seq <= last) totals.out_of_order += 1;
    else if (seq > last + 1) totals.gaps += 1;
  }
  if (phase) phase.onDelivery(c, now, sent); // NaN (no send time): counted, not timed
}

function onFrame(c, data) {
  const now = nowUs();
  if (fastMessage(data, c.rooms.length === 1 ? c.rooms[0] : null)) {
    onMessage(c, now, fRoom, fSeq, fSent);
    return;
  }
  let f;
  try {
    f = JSON.parse(data.toString());
  } catch (e) {
    totals.unexpected += 1;
    return;
  }
  switch (f.type) {
    case 'message': {
      const bar = typeof f.body === 'string' ? f.body.indexOf('|') : -1;
      onMessage(c, now, f.room, f.seq, bar > 0 ? parseFloat(f.body.slice(0, bar)) : NaN);
      break;
    }
    case 'ack': {
      const sent = c.inflight.get(f.ref);
      if (sent === undefined) {
        totals.unexpected += 1;
        return;
      }
      c.inflight.delete(f.ref);
      if (phase) phase.onAck(c, now, sent, f.room);
      break;
    }
    case 'error': {
      bump(totals.errors, f.code || 'unknown');
      if (f.ref !== undefined && c.inflight.has(f.ref)) {
        const sent = c.inflight.get(f.ref);
        c.inflight.delete(f.ref);
        if (phase) phase.onRefused(c, now, sent, f);
      } else if (c.pendingJoin) {
        c.pendingJoin(f);
      }
      break;
    }
    case 'hello':
      c.open = true;
      if (c.onHello) c.onHello();
      break;
    case 'joined':
      if (c.pendingJoin) c.pendingJoin(f);
      break;
    default:
      break; // presence, typing, pong, task, alert...
  }
}

// Open one socket; resolves with null on `hello`, or with a reason string.
function openConn(c, timeoutMs) {
  return new Promise((resolve) => {
    let done = false;
    const finish = (reason) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(reason);
    };
    const timer = setTimeout(() => {
      finish('timeout');
      try {
        c.ws.terminate();
      } catch (e) {
        /* already gone */
      }
    }, timeoutMs);
    const ws = new WebSocket(spec.url, {
      headers: c.token ? { Authorization: `Bearer ${c.token}` } : {},
      perMessageDeflate: !!spec.deflate,
      handshakeTimeout: timeoutMs,
      maxPayload: 64 * 1024 * 1024,
      skipUTF8Validation: true,
    });
    c.ws = ws;
    c.onHello = () => finish(null);
    ws.on('message', (data) => onFrame(c, data));
    ws.on('unexpected-response', (req, res) => {
      finish(`http_${res.statusCode}`);
      req.destroy();
    });
    ws.on('error', (err) => {
      finish(`error_${err.code || err.message}`);
    });
    ws.on('close', (code) => {
      c.closedCode = code;
      if (c.open && !c.closing) {
        bump(totals.closes, String(code));
        if (phase && phase.onLost) phase.onLost(c);
      }
      c.open = false;
      finish(`close_${code}`);
    });
  });
}

function joinRoom(c, room, timeoutMs) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      c.pendingJoin = null;
      resolve('join_timeout');
    }, timeoutMs);
    c.pendingJoin = (f) => {
      clearTimeout(timer);
      c.pendingJoin = null;
      resolve(f.type === 'joined' ? null : `join_${f.code}`);
    };
    c.ws.send(JSON.stringify({ type: 'join', room }));
  });
}

// Run `work(item)` over items with at most `limit` at a time, stopping new ones at `deadlineUs`.
async function pool(items, limit, deadlineUs, work) {
  let i = 0;
  const runners = [];
  for (let k = 0; k < Math.min(limit, items.length); k++) {
    runners.push(
      (async () => {
        while (i < items.length && nowUs() < deadlineUs) {
          const item = items[i++];
          await work(item);
        }
      })()
    );
  }
  await Promise.all(runners);
  return i;
}

function closeAll(conns, abruptFraction = 0) {
  let k = 0;
  for (const c of conns) {
    if (!c.ws) continue;
    c.closing = true;
    try {
      if (abruptFraction > 0 && k % Math.round(1 / abruptFraction) === 0) c.ws.terminate();
      else c.ws.close(1000);
    } catch (e) {
      /* already closed */
    }
    k += 1;
  }
}

function cpuNow() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}
function sysNow() {
  return process.cpuUsage().system / 1e6;
}

// --- traffic ----------------------------------------------------------------------

async function trafficSetup() {
  const conns = spec.conns.map((x) => new Conn(x.token, x.rooms, x.send));
  const failures = {};
  const started = nowUs();
  const deadline = started + (spec.setup_timeout || 120) * 1e6;
  await pool(conns, spec.concurrency || 100, deadline, async (c) => {
    const reason = await openConn(c, spec.connect_timeout_ms || 15000);
    if (reason) {
      bump(failures, reason);
      return;
    }
    for (const room of c.rooms) {
      const r = await joinRoom(c, room, spec.connect_timeout_ms || 15000);
      if (r) {
        bump(failures, r);
        return;
      }
      c.joinedRooms += 1;
    }
  });
  const ready = conns.filter((c) => c.open && c.joinedRooms === c.rooms.length);
  emit({
    event: 'ready',
    wanted: conns.length,
    ready: ready.length,
    failures,
    setup_s: (nowUs() - started) / 1e6,
  });
  return { conns, ready };
}

class TrafficPhase {
  constructor(cmd) {
    this.startUs = Number(BigInt(cmd.start_ns) / 1000n);
    this.wStart = this.startUs + cmd.warmup * 1e6;
    this.wEnd = this.wStart + cmd.duration * 1e6;
    this.window = cmd.window || 0;
    this.rate = cmd.rate || 0;
    this.maxInflight = cmd.max_inflight || 1000;
    this.sending = false;
    this.ack = new Hist();
    this.e2e = new Hist();
    this.sentInWindow = 0;
    this.ackedInWindow = 0; // acks received in the window (throughput)
    this.ackedTotal = 0; // every ack of the phase, drain included
    this.ackedSentInWindow = {}; // room -> acks of sends made in the window
    this.deliveredInWindow = 0; // deliveries received in the window (throughput)
    this.deliveredSentInWindow = 0; // deliveries of messages sent in the window
    this.refused = {};
    this.skipped = 0;
    this.lastActivity = 0;
  }
  onSend(c, t) {
    if (t >= this.wStart && t < this.wEnd) this.sentInWindow += 1;
  }
  onAck(c, now, sent, room) {
    this.lastActivity = now;
    this.ackedTotal += 1;
    const inWindow = now >= this.wStart && now < this.wEnd;
    if (inWindow) this.ackedInWindow += 1;
    // Closed loop: the latency of what arrives in the window (the steady state, however
    // long the queue); open loop: of what was sent in the window, waiting for stragglers.
    if (this.window ? inWindow : sent >= this.wStart && sent < this.wEnd) this.ack.add(now - sent);
    if (sent >= this.wStart && sent < this.wEnd) bump(this.ackedSentInWindow, room);
    if (this.window && this.sending && c.open) {
      if (now < this.wEnd) sendFrame(c);
    }
  }
  onRefused(c, now, sent, f) {
    this.lastActivity = now;
    bump(this.refused, f.code || 'unknown');
    if (this.window && this.sending && c.open && now < this.wEnd) {
      const wait = f.code === 'rate_limited' ? (f.retry_after || 0.1) * 1000 : 10;
      setTimeout(() => {
        if (this.sending && c.open) sendFrame(c);
      }, wait);
    }
  }
  onDelivery(c, now, sentUs) {
    this.lastActivity = now;
    const inWindow = now >= this.wStart && now < this.wEnd;
    if (inWindow) this.deliveredInWindow += 1;
    const sentInWindow = sentUs >= this.wStart && sentUs < this.wEnd;
    if (sentInWindow) this.deliveredSentInWindow += 1;
    if (this.window ? inWindow && sentUs === sentUs : sentInWindow) this.e2e.add(now - sentUs);
  }
}

async function runTraffic(cmd, senders) {
  const p = new TrafficPhase(cmd);
  phase = p;
  const before = { ...totals, errors: { ...totals.errors }, closes: { ...totals.closes } };
  await untilUs(p.startUs);
  p.sending = true;
  if (p.window) {
    for (const c of senders) for (let k = 0; k < p.window; k++) if (c.open) sendFrame(c);
  } else if (p.rate) {
    // Open loop: each sender at `rate` a second from a random phase, whatever the acks.
    const periodUs = 1e6 / p.rate;
    for (const c of senders) {
      let next = p.startUs + Math.random() * periodUs;
      const tick = () => {
        if (!p.sending || !c.open) return;
        if (c.inflight.size < p.maxInflight) sendFrame(c);
        else p.skipped += 1;
        next += periodUs;
        c.timer = setTimeout(tick, Math.max(0, (next - nowUs()) / 1000));
      };
      c.timer = setTimeout(tick, Math.max(0, (next - nowUs()) / 1000));
    }
  }
  await untilUs(p.wStart);
  const cpu0 = cpuNow();
  const sys0 = sysNow();
  await untilUs(p.wEnd);
  const cpu1 = cpuNow();
  const sys1 = sysNow();
  p.sending = false;
  for (const c of senders) if (c.timer) clearTimeout(c.timer);
  // Drain: wait for what is in flight, at most `drain` seconds after an open-loop phase;
  // after a closed-loop one until the server has answered everything (at most
  // `drain_closed` seconds), so that no backlog is left to slow down the next phase.
  const drainS = p.window ? cmd.drain_closed || 60 : cmd.drain || 3;
  const drainEnd = nowUs() + drainS * 1e6;
  while (nowUs() < drainEnd) {
    let inflight = 0;
    for (const c of senders) if (c.open) inflight += c.inflight.size;
    if (inflight === 0 && nowUs() - p.lastActivity > 300e3) break;
    await sleep(50);
  }
  let unacked = 0;
  let unackedSentInWindow = 0;
  const unackedWait = new Hist(); // how long each unacknowledged send of the window waited
  const drained = nowUs();
  for (const c of senders) {
    unacked += c.inflight.size;
    for (const sent of c.inflight.values()) {
      if (sent >= p.wStart && sent < p.wEnd) {
        unackedSentInWindow += 1;
        unackedWait.add(drained - sent);
      }
    }
    c.inflight.clear();
  }
  phase = null;
  const diff = (a, b) => {
    const out = {};
    for (const k of Object.keys(a)) if (a[k] - (b[k] || 0)) out[k] = a[k] - (b[k] || 0);
    return out;
  };
  emit({
    event: 'result',
    seconds: cmd.duration,
    sent_in_window: p.sentInWindow,
    acked_in_window: p.ackedInWindow,
    acked_total: p.ackedTotal,
    acked_sent_in_window: p.ackedSentInWindow,
    delivered_in_window: p.deliveredInWindow,
    delivered_sent_in_window: p.deliveredSentInWindow,
    unacked,
    unacked_sent_in_window: unackedSentInWindow,
    unacked_wait: unackedWait.toJSON(),
    skipped: p.skipped,
    refused: p.refused,
    ack: p.ack.toJSON(),
    e2e: p.e2e.toJSON(),
    cpu_s: cpu1 - cpu0,
    sys_s: sys1 - sys0,
    errors: diff(totals.errors, before.errors),
    closes: diff(totals.closes, before.closes),
    gaps: totals.gaps - before.gaps,
    out_of_order: totals.out_of_order - before.out_of_order,
    open: senders.filter((c) => c.open).length,
  });
}

// --- connect (idle sockets) -------------------------------------------------------

async function runConnect(cmd, conns) {
  const startUs = Number(BigInt(cmd.start_ns) / 1000n);
  await untilUs(startUs);
  const failures = {};
  let connected = 0;
  let lastHello = startUs;
  const deadline = startUs + cmd.timeout * 1e6;
  const connectHist = new Hist();
  const attempted = await pool(conns, cmd.concurrency || 200, deadline, async (c) => {
    const t0 = nowUs();
    const reason = await openConn(c, Math.max(1000, (deadline - t0) / 1000));
    if (reason) {
      bump(failures, reason);
      return;
    }
    const t = nowUs();
    connectHist.add(t - t0);
    connected += 1;
    lastHello = t;
  });
  emit({
    event: 'connected',
    wanted: conns.length,
    attempted,
    connected,
    failures,
    seconds: (lastHello - startUs) / 1e6,
    elapsed_s: (nowUs() - startUs) / 1e6,
    still_open: conns.filter((c) => c.open).length,
    handshake: connectHist.toJSON(),
    last_hello_ns: String(BigInt(Math.round(lastHello)) * 1000n),
  });
}

// --- churn ------------------------------------------------------------------------

async function runChurn(cmd) {
  const startUs = Number(BigInt(cmd.start_ns) / 1000n);
  const tokens = spec.tokens;
  const rooms = spec.rooms;
  const bucketUs = cmd.bucket * 1e6;
  const open = new Set(); // joined and sending
  const all = new Set(); // every socket not yet closed by us
  const buckets = [];
  let current = null;
  let running = true;
  let pending = 0; // sockets still opening
  let lastCloseUs = 0;
  let abruptAcc = 0;
  const newBucket = (index) => ({
    index,
    ack: new Hist(),
    connect: new Hist(),
    sends: 0,
    acks: 0,
    refused: {},
    opened: 0,
    open_failed: {},
    closed_clean: 0,
    closed_abrupt: 0,
    lost: 0,
    unacked_at_close: 0,
    censored: new Hist(), // sends whose socket closed before their ack: the wait so far
    open_at_end: 0,
    cpu_s: 0,
  });
  let churnStart = Infinity;
  const bucketFor = (t) => {
    if (t < churnStart) return null; // a ramp-up send
    const idx = Math.floor((t - churnStart) / bucketUs);
    return idx < buckets.length ? buckets[idx] : current;
  };
  let reconnects = 0; // sockets the server closed, to be replaced
  // A socket is going (closed by us or by the server): its sends still in flight will
  // never be acknowledged; each counts in its send's minute with the wait so far.
  const censor = (c) => {
    const now = nowUs();
    for (const sent of c.inflight.values()) {
      const b = bucketFor(sent);
      if (b) {
        b.unacked_at_close += 1;
        b.censored.add(now - sent);
      }
    }
    c.inflight.clear();
  };
  phase = {
    onSend() {},
    onAck(c, now, sent) {
      const b = bucketFor(sent);
      if (!b) return;
      b.acks += 1;
      b.ack.add(now - sent);
    },
    onRefused(c, now, sent, f) {
      const b = bucketFor(sent);
      if (b) bump(b.refused, f.code || 'unknown');
    },
    onDelivery() {},
    onLost(c) {
      // Closed by the server (or the network) while we meant it to be open: a client
      // would reconnect, so another socket is opened in its place.
      if (current) current.lost += 1;
      if (running && open.has(c)) reconnects += 1;
      censor(c);
      open.delete(c);
      all.delete(c);
      if (c.timer) clearTimeout(c.timer);
    },
  };
  const scheduleSends = (c) => {
    const mean = cmd.send_interval * 1e3;
    const tick = () => {
      if (!running || !c.open || c.closing) return;
      sendFrame(c);
      if (current) current.sends += 1;
      c.timer = setTimeout(tick, mean * (0.5 + Math.random()));
    };
    c.timer = setTimeout(tick, mean * Math.random());
  };
  const openOne = async () => {
    const token = tokens[Math.floor(Math.random() * tokens.length)];
    const room = rooms[Math.floor(Math.random() * rooms.length)];
    const c = new Conn(token, [room], true);
    all.add(c);
    const t0 = nowUs();
    pending += 1;
    let reason = await openConn(c, cmd.connect_timeout * 1000);
    if (!reason && running) reason = await joinRoom(c, room, cmd.connect_timeout * 1000);
    pending -= 1;
    const b = current;
    if (!running) {
      // The end came while it was opening: it leaves with the rest.
      all.delete(c);
      c.closing = true;
      try {
        c.ws.terminate();
      } catch (e) {
        /* gone */
      }
      lastCloseUs = nowUs();
      return;
    }
    if (reason) {
      if (b) bump(b.open_failed, reason);
      all.delete(c);
      c.closing = true;
      try {
        c.ws.terminate();
      } catch (e) {
        /* gone */
      }
      return;
    }
    if (b) {
      b.opened += 1;
      b.connect.add(nowUs() - t0);
    }
    open.add(c);
    scheduleSends(c);
  };
  const closeOne = (abrupt) => {
    if (open.size === 0) return;
    // A random joined socket.
    let k = Math.floor(Math.random() * open.size);
    let victim = null;
    for (const c of open) {
      if (k-- === 0) {
        victim = c;
        break;
      }
    }
    open.delete(victim);
    all.delete(victim);
    victim.closing = true;
    if (victim.timer) clearTimeout(victim.timer);
    censor(victim);
    if (abrupt) {
      victim.ws.terminate(); // TCP goes, no close frame
      if (current) current.closed_abrupt += 1;
    } else {
      victim.ws.close(1000);
      if (current) current.closed_clean += 1;
    }
  };

  await untilUs(startUs);
  // Ramp up to the target (not measured), `ramp_rate` sockets a second.
  const rampStart = nowUs();
  const rampJobs = [];
  for (let i = 0; i < cmd.target; i++) {
    rampJobs.push(openOne());
    if (i % Math.max(1, Math.round(cmd.ramp_rate / 20)) === 0) await sleep(50);
  }
  current = newBucket(-1);
  await Promise.race([Promise.all(rampJobs), sleep(cmd.ramp_timeout * 1000)]);
  emit({
    event: 'ramped',
    open: open.size,
    target: cmd.target,
    seconds: (nowUs() - rampStart) / 1e6,
    open_failed: current.open_failed,
  });
  // Churn, bucket by bucket.
  churnStart = nowUs();
  const churnStartNs = String(nowNs());
  let opensDue = 0;
  let closesDue = 0;
  for (let bi = 0; bi < cmd.buckets; bi++) {
    current = newBucket(bi);
    buckets.push(current);
    const bStart = churnStart + bi * bucketUs;
    const bEnd = bStart + bucketUs;
    const cpu0 = cpuNow();
    let last = nowUs();
    while (nowUs() < bEnd) {
      await sleep(25);
      const t = nowUs();
      const dt = (t - last) / 1e6;
      last = t;
      opensDue += cmd.open_rate * dt;
      closesDue += cmd.close_rate * dt;
      while (opensDue >= 1) {
        opensDue -= 1;
        openOne();
      }
      for (; reconnects > 0; reconnects--) openOne();
      while (closesDue >= 1) {
        closesDue -= 1;
        abruptAcc += cmd.abrupt_fraction;
        const abrupt = abruptAcc >= 1;
        if (abrupt) abruptAcc -= 1;
        closeOne(abrupt);
      }
    }
    current.cpu_s = cpuNow() - cpu0;
    current.open_at_end = open.size;
    emit({
      event: 'bucket',
      ...current,
      ack: current.ack.toJSON(),
      connect: current.connect.toJSON(),
      censored: current.censored.toJSON(),
    });
  }
  // Everyone leaves: half with a close frame, half without.
  running = false;
  await sleep(cmd.settle * 1000); // let the last acks arrive
  const endBucket = newBucket(cmd.buckets);
  current = endBucket;
  let k = 0;
  for (const c of all) {
    c.closing = true;
    censor(c);
    if (c.timer) clearTimeout(c.timer);
    try {
      if (k++ % 2 === 0) c.ws.terminate();
      else c.ws.close(1000);
    } catch (e) {
      /* gone */
    }
  }
  lastCloseUs = nowUs();
  // Sockets still opening close themselves as they finish (see openOne).
  const pendingEnd = nowUs() + (cmd.connect_timeout + 1) * 1e6;
  while (pending > 0 && nowUs() < pendingEnd) await sleep(20);
  const closedNs = String(BigInt(Math.round(lastCloseUs)) * 1000n);
  await sleep(200);
  emit({
    event: 'result',
    churn_start_ns: churnStartNs,
    all_closed_ns: closedNs,
    closed_at_end: k,
    still_opening: pending,
    errors: totals.errors,
    closes: totals.closes,
    gaps: totals.gaps,
    out_of_order: totals.out_of_order,
    // Every minute again, now that late acks and unacknowledged sends are all counted.
    buckets: buckets.map((x) => ({
      index: x.index,
      sends: x.sends,
      acks: x.acks,
      unacked_at_close: x.unacked_at_close,
      ack: x.ack.toJSON(),
      censored: x.censored.toJSON(),
    })),
  });
  phase = null;
}

// --- main -------------------------------------------------------------------------

async function main() {
  let conns = [];
  let senders = [];
  if (spec.mode === 'traffic') {
    const r = await trafficSetup();
    conns = r.conns;
    senders = r.ready.filter((c) => c.sends);
  } else {
    if (spec.mode === 'connect') conns = spec.conns.map((x) => new Conn(x.token, [], false));
    emit({ event: 'ready', wanted: conns.length, ready: 0, failures: {} });
  }
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const cmd = JSON.parse(line);
    if (cmd.cmd === 'traffic') await runTraffic(cmd, senders);
    else if (cmd.cmd === 'connect') await runConnect(cmd, conns);
    else if (cmd.cmd === 'churn') await runChurn(cmd);
    else if (cmd.cmd === 'quit') break;
  }
  closeAll(conns);
  await sleep(300);
  emit({ event: 'bye' });
  process.exit(0);
}

process.on('uncaughtException', (err) => {
  emit({ event: 'fatal', error: String(err && err.stack ? err.stack : err) });
  process.exit(3);
});

main().catch((err) => {
  emit({ event: 'fatal', error: String(err && err.stack ? err.stack : err) });
  process.exit(3);
});
