"""The hot-path benchmark: this server against a bare `websockets` broadcast server.

    .venv/bin/python bench/hotpath/run.py [--scenarios 1,2,3,4,5,6] [--runs 3]
        [--db auto|sqlite|postgres|both] [--quick] [--out DIR] ...

One command, servers started here: for each scenario and run, the baseline
(`baseline_server.py`, bare `websockets`) and `chat serve` from this checkout on a
fresh SQLite file (or a fresh PostgreSQL database) are driven by the same Node load
generator (`loadgen/`), the server pinned to one core and the load to the other.
Prints a markdown table (scenario, metric, baseline, this server, ratio, goal,
met?) of medians over the runs and writes it, with every run's figures, to
`--out` as JSON and markdown. `--quick` is the CI smoke: scenario 1's saturation
only, one short run, exit status 1 when the ratio to the baseline is below 0.375
(half the goal). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import hplib  # noqa: E402
from hplib import BenchError, Hist, LoadGroup, log  # noqa: E402

QUICK_THRESHOLD = 0.375  # half of scenario 1's goal ratio (0.75)
FAKE_TOKEN = "x" * 220  # the baseline ignores tokens; same handshake size as a real one


# --- the report -------------------------------------------------------------------------


@dataclass
class Goal:
    text: str
    check: Callable[[float | None, float | None], bool | None]


def ratio_at_least(x: float) -> Goal:
    return Goal(f"≥ {x:g}x baseline", lambda ratio, value: None if ratio is None else ratio >= x)


def below(x: float, unit: str) -> Goal:
    return Goal(f"< {x:g} {unit}", lambda ratio, value: None if value is None else value < x)


def at_most(x: float, unit: str) -> Goal:
    return Goal(f"≤ {x:g} {unit}", lambda ratio, value: None if value is None else value <= x)


def at_least(x: float, unit: str) -> Goal:
    return Goal(f"≥ {x:,g} {unit}", lambda ratio, value: None if value is None else value >= x)


@dataclass
class Row:
    scenario: str
    metric: str
    unit: str
    goal: Goal | None = None
    baseline: list[float] = field(default_factory=list)
    chat: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @staticmethod
    def med(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    @property
    def ratio(self) -> float | None:
        b, c = self.med(self.baseline), self.med(self.chat)
        if b is None or c is None or b == 0:
            return None
        return c / b

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.goal.check(self.ratio, self.med(self.chat))

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "metric": self.metric,
            "unit": self.unit,
            "baseline_median": self.med(self.baseline),
            "chat_median": self.med(self.chat),
            "ratio": self.ratio,
            "goal": self.goal.text if self.goal else None,
            "met": self.met,
            "baseline_runs": self.baseline,
            "chat_runs": self.chat,
            "notes": self.notes,
        }


class Report:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}
        self.notes: list[str] = []
        self.generator: dict[str, list[float]] = {}
        self.raw: list[dict[str, Any]] = []
        self.discarded: list[dict[str, Any]] = []

    def row(self, scenario: str, metric: str, unit: str, goal: Goal | None = None) -> Row:
        key = (scenario, metric)
        if key not in self.rows:
            self.rows[key] = Row(scenario, metric, unit, goal)
        elif goal is not None and self.rows[key].goal is None:
            self.rows[key].goal = goal
        return self.rows[key]

    def add(
        self,
        scenario: str,
        metric: str,
        unit: str,
        side: str,
        value: float | None,
        goal: Goal | None = None,
    ) -> None:
        row = self.row(scenario, metric, unit, goal)
        if value is not None:
            (row.baseline if side == "baseline" else row.chat).append(float(value))

    def snapshot(self) -> Any:
        return copy.deepcopy((self.rows, self.notes, self.generator, self.raw))

    def restore(self, snapshot: Any) -> None:
        self.rows, self.notes, self.generator, self.raw = copy.deepcopy(snapshot)

    def note(self, text: str) -> None:
        log(f"  note: {text}")
        self.notes.append(text)

    def gen(self, key: str, value: float | None) -> None:
        if value is not None:
            self.generator.setdefault(key, []).append(value)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("/s", "msgs/s", "deliveries/s", "conns/s"):
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.2f}" if value < 100 else f"{value:,.0f}"
    if unit in ("KiB", "MiB", "s", "%"):
        return f"{value:,.1f}"
    return f"{value:,.4g}"


def markdown(report: Report, meta: dict[str, Any]) -> str:
    out = [
        f"Medians of {meta['runs']} run(s) per figure (scenario 6: {meta['churn_runs']}); "
        f"{meta['pinning']}; generator: {meta['procs']} Node process(es). Ratio = this "
        "server / baseline of the same invocation (for latencies and memory, lower is better).",
        "",
        "| scenario | metric | baseline | this server | ratio | goal | met? |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for row in report.rows.values():
        ratio = row.ratio
        met = {True: "yes", False: "**no**", None: "-" if row.goal is None else "n/a"}[row.met]
        unit = f" ({row.unit})" if row.unit else ""
        out.append(
            f"| {row.scenario} | {row.metric}{unit} | {fmt(row.med(row.baseline), row.unit)} "
            f"| {fmt(row.med(row.chat), row.unit)} | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} | "
            f"{row.goal.text if row.goal else ''} | {met} |"
        )
    if report.generator:
        out += ["", "Load generator (is it the bottleneck?):", ""]
        out += ["| measure | median | runs |", "|---|---:|---|"]
        for key, values in report.generator.items():
            runs = ", ".join(f"{v:,.1f}" for v in values)
            out.append(f"| {key} | {statistics.median(values):,.1f} | {runs} |")
    details = [r for r in report.rows.values() if len(r.chat) > 1 or len(r.baseline) > 1]
    if details:
        out += ["", "<details><summary>every run</summary>", ""]
        out += ["| scenario | metric | baseline runs | this server runs |", "|---|---|---|---|"]
        for row in details:
            b = ", ".join(fmt(v, row.unit) for v in row.baseline)
            c = ", ".join(fmt(v, row.unit) for v in row.chat)
            out.append(f"| {row.scenario} | {row.metric} | {b} | {c} |")
        out += ["", "</details>"]
    notes = report.notes + [
        f"{r.scenario} {r.metric}: {n}" for r in report.rows.values() for n in r.notes
    ]
    if notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in dict.fromkeys(notes)]
    return "\n".join(out)


# --- context ------------------------------------------------------------------------------


@dataclass
class Ctx:
    args: argparse.Namespace
    pin: hplib.Pinning
    work: Path
    report: Report
    noisy: list[str] = field(default_factory=list)  # this run's signs of interference

    def dbs(self, scenario: int) -> list[str]:
        choice = self.args.db
        if choice == "auto":
            return ["sqlite", "postgres"] if scenario in (3, 5) else ["sqlite"]
        return ["sqlite", "postgres"] if choice == "both" else [choice]


@dataclass
class Target:
    name: str  # baseline | ceiling | chat
    db: str | None
    url: str
    pid: int
    tokens: list[str]
    chat: hplib.ChatServer | None = None

    @property
    def side(self) -> str:
        return "chat" if self.chat is not None else self.name

    @property
    def label(self) -> str:
        return f"chat/{self.db}" if self.chat is not None else self.name


@contextlib.asynccontextmanager
async def target(
    ctx: Ctx,
    name: str,
    db: str | None,
    users: int,
    rooms: list[str],
    overrides: dict[str, Any] | None = None,
) -> AsyncIterator[Target]:
    """A running server, with `users` accounts and `rooms` when it is the chat server."""
    workdir = ctx.work / f"{name}-{db or 'mem'}-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    if name == "baseline":
        server = await hplib.start_baseline(workdir, ctx.pin, ctx.args.baseline_loop)
        try:
            yield Target(name, None, server.ws_url, server.pid, [FAKE_TOKEN] * users)
        finally:
            server.stop()
        return
    if name == "ceiling":
        server = await hplib.start_ceiling(workdir, ctx.pin)
        try:
            yield Target(
                name, None, f"ws://127.0.0.1:{server.port}/ws", server.pid, [FAKE_TOKEN] * users
            )
        finally:
            server.stop()
        return
    pg: hplib.PgDatabase | None = None
    if db == "postgres":
        pg = hplib.PgDatabase(ctx.args.pg_url)
        database_url = await pg.create()
    else:
        database_url = f"sqlite+aiosqlite:///{workdir / 'chat.db'}"
    chat: hplib.ChatServer | None = None
    try:
        chat = await hplib.start_chat(
            workdir, database_url, ctx.pin, overrides or {}, ctx.args.seeding
        )
        accounts = await hplib.seed_users(chat, users, ctx.args.seeding)
        started = time.monotonic()
        await hplib.create_rooms(chat, rooms)
        log(f"  {len(rooms)} rooms created in {time.monotonic() - started:.1f} s")
        yield Target("chat", db, chat.ws_url, chat.server.pid, [a.token for a in accounts], chat)
    finally:
        if chat is not None:
            if not chat.server.alive():
                ctx.report.note(f"chat/{db} server died: {chat.server.log_tail(5)}")
            await chat.close()
        if pg is not None:
            await pg.drop()


# --- traffic phases -----------------------------------------------------------------------


def layout(rooms: list[str], members: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """`members` clients per room, each client a user of its own, every client sending."""
    conns = []
    for room in rooms:
        for _ in range(members):
            conns.append({"rooms": [room], "send": True})
    return conns, {room: members for room in rooms}


@dataclass
class Traffic:
    """One measured phase, merged over the generator processes."""

    seconds: float
    deliveries_per_s: float
    acks_per_s: float
    sends_per_s: float
    acked_total: int
    ack: Hist
    e2e: Hist
    expected: int
    received: int
    unacked: int
    skipped: int
    errors: dict[str, int]
    closes: dict[str, int]
    refused: dict[str, int]
    gaps: int
    out_of_order: int
    load_cpu_pct: float
    server_cpu_pct: float | None
    server_core_pct: float | None = None
    load_core_pct: float | None = None
    load_cpu_s: float = 0.0
    delivered: int = 0
    closed_loop: bool = False
    unacked_in_window: int = 0
    drain: float = 0.0

    unacked_wait: Hist = field(default_factory=Hist)

    def ack_ms(self, q: float) -> float | None:
        """The ack latency quantile. In an open-loop phase a send of the window that was
        never acknowledged counts with the time it had waited when the phase ended: the
        quantile is then a lower bound (noted by `problems`)."""
        if self.closed_loop or not self.unacked_in_window:
            return self.ack.pct_ms(q)
        both = Hist()
        for h in (self.ack, self.unacked_wait):
            both.add({"buckets": h.buckets, "n": h.n, "max_us": h.max_us})
        return both.pct_ms(q)

    @property
    def load_capacity(self) -> float | None:
        """Deliveries/s the generator would take with one whole core, at this phase's
        measured CPU cost per delivery (a ceiling that noise from other processes does
        not lower)."""
        if self.load_cpu_s <= 0 or self.delivered == 0:
            return None
        return self.delivered / self.load_cpu_s

    @property
    def missing(self) -> int:
        return max(0, self.expected - self.received)

    def problems(self) -> list[str]:
        out = []
        if self.missing:
            out.append(
                f"{self.missing} of {self.expected} deliveries of acknowledged messages had not "
                "arrived by the end of the drain"
            )
        if self.unacked and self.closed_loop:
            out.append(f"{self.unacked} sends still unanswered after the closed-loop drain")
        if self.unacked_in_window and not self.closed_loop:
            sent = self.ack.n + self.unacked_in_window
            out.append(
                f"overloaded: {self.unacked_in_window} of {sent} sends of the window "
                f"({self.unacked_in_window / sent:.0%}) not acknowledged {self.drain:g} s after "
                "it; they count with the time they had waited, so ack percentiles are lower bounds"
            )
        for name, counts in (
            ("errors", self.errors),
            ("closes", self.closes),
            ("refused", self.refused),
        ):
            if counts:
                out.append(f"{name} {counts}")
        if self.gaps or self.out_of_order:
            out.append(f"seq gaps {self.gaps}, out of order {self.out_of_order}")
        if self.skipped:
            out.append(f"{self.skipped} paced sends skipped (too many in flight)")
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "deliveries_per_s": self.deliveries_per_s,
            "acks_per_s": self.acks_per_s,
            "sends_per_s": self.sends_per_s,
            "ack_p50_ms": self.ack_ms(0.5),
            "ack_p99_ms": self.ack_ms(0.99),
            "e2e_p50_ms": self.e2e.pct_ms(0.5),
            "e2e_p99_ms": self.e2e.pct_ms(0.99),
            "e2e_max_ms": self.e2e.max_us / 1000,
            "load_cpu_pct": self.load_cpu_pct,
            "server_cpu_pct": self.server_cpu_pct,
            "server_core_busy_pct": self.server_core_pct,
            "load_core_busy_pct": self.load_core_pct,
            "load_capacity_deliveries_per_s": self.load_capacity,
            "problems": self.problems(),
        }


async def traffic_group(
    ctx: Ctx, tgt: Target, conns: list[dict[str, Any]]
) -> tuple[LoadGroup, int, int]:
    spec = {
        "url": tgt.url,
        "mode": "traffic",
        "deflate": ctx.args.deflate,
        "body_bytes": ctx.args.body_bytes,
        "concurrency": ctx.args.connect_concurrency,
        "connect_timeout_ms": 15000,
        "setup_timeout": ctx.args.setup_timeout,
    }
    tokens = tgt.tokens
    full = [{**c, "token": tokens[i % len(tokens)]} for i, c in enumerate(conns)]
    group = LoadGroup(spec, full, ctx.args.procs, ctx.work, ctx.pin)
    started = time.monotonic()
    try:
        readies = await group.start(ctx.args.setup_timeout + 30)
    except BaseException:
        await group.stop()
        raise
    ready = sum(r["ready"] for r in readies)
    failures: dict[str, int] = {}
    for r in readies:
        for k, v in r["failures"].items():
            failures[k] = failures.get(k, 0) + v
    log(
        f"  {tgt.label}: {ready} of {len(conns)} sockets joined in "
        f"{time.monotonic() - started:.1f} s"
    )
    if failures:
        ctx.report.note(f"{tgt.label}: socket setup failures {failures}")
    if ready == 0:
        await group.stop()
        raise BenchError(f"{tgt.label}: no socket could connect and join")
    return group, ready, len(conns)


async def run_phase(
    ctx: Ctx,
    group: LoadGroup,
    tgt: Target,
    members: dict[str, int],
    params: dict[str, Any],
    warmup: float,
    duration: float,
) -> Traffic:
    drain = ctx.args.drain
    when = hplib.start_ns(0.5)
    group.command(
        {
            "cmd": "traffic",
            "start_ns": when,
            "warmup": warmup,
            "duration": duration,
            "drain": drain,
            "drain_closed": ctx.args.drain_closed,
            **params,
        }
    )
    window_start = int(when) / 1e9 + warmup
    server_cpu: float | None = None
    cores: tuple[float | None, float | None] = (None, None)
    try:
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        c0, k0 = hplib.cpu_seconds(tgt.pid), hplib.core_times()
        await asyncio.sleep(max(0.0, window_start + duration - time.monotonic()))
        c1, k1 = hplib.cpu_seconds(tgt.pid), hplib.core_times()
        server_cpu = (c1 - c0) / duration * 100
        if ctx.pin.active:
            cores = (hplib.busy_pct(k0, k1, ctx.pin.server), hplib.busy_pct(k0, k1, ctx.pin.load))
    except (OSError, BenchError):
        server_cpu = None
    results = await group.gather(
        warmup + duration + max(drain, ctx.args.drain_closed) + 60, "result"
    )
    traffic = merge_traffic(results, duration, members, server_cpu)
    traffic.server_core_pct, traffic.load_core_pct = cores
    traffic.closed_loop = bool(params.get("window"))
    traffic.drain = drain
    traffic.unacked_in_window = sum(r.get("unacked_sent_in_window", 0) for r in results)
    traffic.unacked_wait = Hist.merged(r["unacked_wait"] for r in results if "unacked_wait" in r)
    return traffic


def _sum_dicts(parts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out.get(k, 0) + int(v)
    return out


def merge_traffic(
    results: list[dict[str, Any]],
    duration: float,
    members: dict[str, int],
    server_cpu: float | None,
) -> Traffic:
    acked_sent = _sum_dicts([r["acked_sent_in_window"] for r in results])
    expected = sum(count * members.get(room, 0) for room, count in acked_sent.items())
    return Traffic(
        seconds=duration,
        deliveries_per_s=sum(r["delivered_in_window"] for r in results) / duration,
        acks_per_s=sum(r["acked_in_window"] for r in results) / duration,
        sends_per_s=sum(r["sent_in_window"] for r in results) / duration,
        acked_total=sum(r["acked_total"] for r in results),
        ack=Hist.merged(r["ack"] for r in results),
        e2e=Hist.merged(r["e2e"] for r in results),
        expected=expected,
        received=sum(r["delivered_sent_in_window"] for r in results),
        unacked=sum(r["unacked"] for r in results),
        skipped=sum(r["skipped"] for r in results),
        errors=_sum_dicts([r["errors"] for r in results]),
        closes=_sum_dicts([r["closes"] for r in results]),
        refused=_sum_dicts([r["refused"] for r in results]),
        gaps=sum(r["gaps"] for r in results),
        out_of_order=sum(r["out_of_order"] for r in results),
        load_cpu_pct=sum(r["cpu_s"] for r in results) / duration * 100,
        server_cpu_pct=server_cpu,
        load_cpu_s=sum(r["cpu_s"] for r in results),
        delivered=sum(r["delivered_in_window"] for r in results),
    )


def describe(label: str, phase: str, t: Traffic) -> None:
    s = t.summary()
    log(
        f"  {label} {phase}: {s['deliveries_per_s']:,.0f} deliveries/s, "
        f"{s['acks_per_s']:,.0f} acks/s, "
        f"ack p50/p99 {s['ack_p50_ms'] or 0:.2f}/{s['ack_p99_ms'] or 0:.2f} ms, "
        f"e2e p50/p99 {s['e2e_p50_ms'] or 0:.2f}/{s['e2e_p99_ms'] or 0:.2f} ms, "
        f"cpu server {s['server_cpu_pct'] or 0:.0f}% load {s['load_cpu_pct']:.0f}%, "
        f"cores busy: server {s['server_core_busy_pct'] or 0:.0f}% "
        f"load {s['load_core_busy_pct'] or 0:.0f}%"
    )


def record_problems(ctx: Ctx, label: str, phase: str, t: Traffic) -> None:
    for problem in t.problems():
        ctx.report.note(f"{label} {phase}: {problem}")
    check_noise(ctx, label, phase, t.server_cpu_pct, t.server_core_pct)
    if (t.server_cpu_pct or 0) < 90:  # else the server was the limit, whatever the load
        check_noise(ctx, label, phase, t.load_cpu_pct, t.load_core_pct, load=True)


def check_noise(
    ctx: Ctx,
    label: str,
    phase: str,
    own: float | None,
    core: float | None,
    load: bool = False,
) -> None:
    """Flag the run when others took a measured core: `core` is how busy the core was
    (everything on it), `own` what the pinned process itself used. The difference is
    the kernel's loopback work (up to about 20 points at the highest rates) plus other
    processes. A flagged run is measured again (`--noisy-retries`)."""
    if own is None or core is None or not ctx.pin.active:
        return
    foreign = core - own
    if foreign <= ctx.args.noise_threshold or (load and core < 90):
        return  # a generator core with room to spare is not a problem
    who = "generator" if load else "server"
    text = (
        f"{label} {phase}: the {who} used {own:.0f}% of a core while its core was "
        f"{core:.0f}% busy: others were running there"
    )
    if label.endswith("postgres") and not load:
        ctx.report.note(text + " (PostgreSQL's own processes are not pinned)")
    else:
        ctx.noisy.append(text)


# --- scenarios 1 and 2: saturation, then latency at half of it ---------------------------


async def scenario_fanout(ctx: Ctx, number: int, rooms_count: int, members: int, run: int) -> None:
    args = ctx.args
    sc = str(number)
    rooms = [f"s{number}-r{i}" for i in range(rooms_count)]
    conns, member_map = layout(rooms, members)
    users = len(conns)
    warmup, duration = args.warmup, args.duration
    half_rate: float | None = None  # per sender, from this server's saturation

    # This server first: its saturation sets the rate of both latency phases.
    for db in ctx.dbs(number):
        async with target(ctx, "chat", db, users, rooms) as tgt:
            group, ready, wanted = await traffic_group(ctx, tgt, conns)
            try:
                sat = await run_phase(
                    ctx, group, tgt, member_map, {"window": args.window}, warmup, duration
                )
                describe(tgt.label, "saturation", sat)
                record_problems(ctx, tgt.label, f"s{sc} saturation", sat)
                partial = "" if ready == wanted else f" (only {ready} of {wanted} sockets)"
                suffix = "" if db == "sqlite" else f", {db}"
                row = f"saturation{suffix}"
                ctx.report.add(
                    sc,
                    row,
                    "deliveries/s",
                    "chat",
                    sat.deliveries_per_s,
                    ratio_at_least(0.75) if db == "sqlite" else None,
                )
                if partial:
                    ctx.report.row(sc, row, "deliveries/s").notes.append(f"run {run}{partial}")
                ctx.report.gen(f"load CPU % at this server's s{sc} saturation", sat.load_cpu_pct)
                ctx.report.raw.append(
                    {
                        "scenario": sc,
                        "run": run,
                        "target": tgt.label,
                        "phase": "saturation",
                        **sat.summary(),
                    }
                )
                if args.quick:
                    continue
                senders = ready
                msgs_per_s = sat.deliveries_per_s / 2 / (sum(member_map.values()) / len(member_map))
                rate = max(0.01, msgs_per_s / max(1, senders))
                if db == "sqlite" or half_rate is None:
                    half_rate = rate
                lat = await run_phase(
                    ctx,
                    group,
                    tgt,
                    member_map,
                    {"rate": rate, "max_inflight": 10000},
                    warmup,
                    duration,
                )
                describe(tgt.label, f"at half saturation ({msgs_per_s:,.0f} msgs/s)", lat)
                record_problems(ctx, tgt.label, f"s{sc} half saturation", lat)
                ctx.report.add(
                    sc, f"e2e p50 at half saturation{suffix}", "ms", "chat", lat.e2e.pct_ms(0.5)
                )
                ctx.report.add(
                    sc,
                    f"e2e p99 at half saturation{suffix}",
                    "ms",
                    "chat",
                    lat.e2e.pct_ms(0.99),
                    below(10, "ms") if db == "sqlite" else None,
                )
                ctx.report.add(
                    sc, f"ack p99 at half saturation{suffix}", "ms", "chat", lat.ack_ms(0.99)
                )
                ctx.report.raw.append(
                    {
                        "scenario": sc,
                        "run": run,
                        "target": tgt.label,
                        "phase": "half",
                        "rate_per_sender": rate,
                        **lat.summary(),
                    }
                )
            finally:
                await group.stop()

    async with target(ctx, "baseline", None, users, rooms) as tgt:
        group, ready, wanted = await traffic_group(ctx, tgt, conns)
        try:
            sat = await run_phase(
                ctx, group, tgt, member_map, {"window": args.window}, warmup, duration
            )
            describe(tgt.label, "saturation", sat)
            record_problems(ctx, tgt.label, f"s{sc} saturation", sat)
            for db in ctx.dbs(number):
                suffix = "" if db == "sqlite" else f", {db}"
                ctx.report.add(
                    sc, f"saturation{suffix}", "deliveries/s", "baseline", sat.deliveries_per_s
                )
            ctx.report.gen(f"load CPU % at baseline s{sc} saturation", sat.load_cpu_pct)
            ctx.report.gen(f"server CPU % at baseline s{sc} saturation", sat.server_cpu_pct)
            ctx.report.gen(f"server core busy % at baseline s{sc} saturation", sat.server_core_pct)
            ctx.report.gen(f"load core busy % at baseline s{sc} saturation", sat.load_core_pct)
            ctx.report.gen(
                f"generator capacity at baseline s{sc} saturation "
                "(deliveries/s per core of its CPU)",
                sat.load_capacity,
            )
            ctx.report.raw.append(
                {
                    "scenario": sc,
                    "run": run,
                    "target": "baseline",
                    "phase": "saturation",
                    **sat.summary(),
                }
            )
            if number == 1:
                ctx.report.gen("baseline s1 saturation (deliveries/s)", sat.deliveries_per_s)
            if not args.quick and half_rate is not None:
                lat = await run_phase(
                    ctx,
                    group,
                    tgt,
                    member_map,
                    {"rate": half_rate, "max_inflight": 10000},
                    warmup,
                    duration,
                )
                describe(tgt.label, "at this server's half saturation", lat)
                record_problems(ctx, tgt.label, f"s{sc} half saturation", lat)
                for db in ctx.dbs(number):
                    suffix = "" if db == "sqlite" else f", {db}"
                    ctx.report.add(
                        sc,
                        f"e2e p50 at half saturation{suffix}",
                        "ms",
                        "baseline",
                        lat.e2e.pct_ms(0.5),
                    )
                    ctx.report.add(
                        sc,
                        f"e2e p99 at half saturation{suffix}",
                        "ms",
                        "baseline",
                        lat.e2e.pct_ms(0.99),
                    )
                    ctx.report.add(
                        sc,
                        f"ack p99 at half saturation{suffix}",
                        "ms",
                        "baseline",
                        lat.ack_ms(0.99),
                    )
                ctx.report.raw.append(
                    {
                        "scenario": sc,
                        "run": run,
                        "target": "baseline",
                        "phase": "half",
                        "rate_per_sender": half_rate,
                        **lat.summary(),
                    }
                )
        finally:
            await group.stop()

    if number == 1 and not args.quick and not args.no_ceiling:
        await generator_ceiling(ctx, conns, member_map, rooms, run)


async def generator_ceiling(
    ctx: Ctx, conns: list[dict[str, Any]], member_map: dict[str, int], rooms: list[str], run: int
) -> None:
    """Scenario 1's saturation against a Node `ws` server that outruns the generator."""
    async with target(ctx, "ceiling", None, len(conns), rooms) as tgt:
        group, _, _ = await traffic_group(ctx, tgt, conns)
        try:
            sat = await run_phase(
                ctx,
                group,
                tgt,
                member_map,
                {"window": ctx.args.window},
                ctx.args.warmup,
                ctx.args.duration,
            )
            describe("generator ceiling (Node ws server)", "saturation", sat)
            check_noise(ctx, "ceiling", "saturation", sat.server_cpu_pct, sat.server_core_pct)
            if (sat.server_cpu_pct or 0) < 90:
                check_noise(ctx, "ceiling", "saturation", sat.load_cpu_pct, sat.load_core_pct, True)
            ctx.report.gen(
                "generator ceiling: s1 deliveries/s against a Node ws server", sat.deliveries_per_s
            )
            ctx.report.gen("load CPU % at the ceiling", sat.load_cpu_pct)
            ctx.report.gen("Node ws server CPU % at the ceiling", sat.server_cpu_pct)
            ctx.report.gen("load core busy % at the ceiling", sat.load_core_pct)
            ctx.report.gen(
                "generator capacity at the ceiling (deliveries/s per core of its CPU)",
                sat.load_capacity,
            )
            ctx.report.raw.append(
                {
                    "scenario": "ceiling",
                    "run": run,
                    "target": "ceiling",
                    "phase": "saturation",
                    **sat.summary(),
                }
            )
        finally:
            await group.stop()


# --- scenario 3: direct messages, stored messages/s -----------------------------------------


async def scenario_dm(ctx: Ctx, run: int) -> None:
    args = ctx.args
    rooms = [f"dm-{i}" for i in range(args.dm_rooms)]
    conns, member_map = layout(rooms, 2)
    targets: list[tuple[str, str | None]] = [("chat", db) for db in ctx.dbs(3)] + [
        ("baseline", None)
    ]
    for name, db in targets:
        async with target(ctx, name, db, len(conns), rooms) as tgt:
            group, ready, wanted = await traffic_group(ctx, tgt, conns)
            try:
                sat = await run_phase(
                    ctx, group, tgt, member_map, {"window": args.window}, args.warmup, args.duration
                )
            finally:
                await group.stop()
            describe(tgt.label, "all sending", sat)
            record_problems(ctx, tgt.label, "s3", sat)
            ctx.report.raw.append(
                {
                    "scenario": "3",
                    "run": run,
                    "target": tgt.label,
                    "phase": "saturation",
                    **sat.summary(),
                }
            )
            sides = [(tgt.side, db)] if name == "chat" else [("baseline", d) for d in ctx.dbs(3)]
            for side, d in sides:
                suffix = "" if d == "sqlite" else f", {d}"
                goal = at_least(20_000, "msgs/s") if side == "chat" and d == "sqlite" else None
                ctx.report.add("3", f"stored msgs/s{suffix}", "msgs/s", side, sat.acks_per_s, goal)
                ctx.report.add("3", f"ack p50{suffix}", "ms", side, sat.ack_ms(0.5))
                ctx.report.add("3", f"ack p99{suffix}", "ms", side, sat.ack_ms(0.99))
            if ready != wanted:
                ctx.report.note(f"s3 {tgt.label} run {run}: only {ready} of {wanted} sockets")
            if tgt.chat is not None:
                stored = await hplib.stored_messages(tgt.chat, set(rooms))
                if stored < sat.acked_total:
                    ctx.report.note(
                        f"s3 {tgt.label} run {run}: {sat.acked_total} acks but "
                        f"{stored} messages stored"
                    )
                else:
                    log(f"  stored check: {stored} messages stored for {sat.acked_total} acks")


# --- scenario 4: idle authenticated connections -----------------------------------------------


async def scenario_idle(ctx: Ctx, run: int) -> None:
    args = ctx.args
    count = args.idle_connections
    users = max(1, count // args.idle_per_user)
    for name, db in [("chat", d) for d in ctx.dbs(4)] + [("baseline", None)]:
        async with target(ctx, name, db, users, []) as tgt:
            conns = [{"token": tgt.tokens[i % len(tgt.tokens)]} for i in range(count)]
            spec = {"url": tgt.url, "mode": "connect", "deflate": args.deflate}
            group = LoadGroup(spec, conns, args.procs, ctx.work, ctx.pin)
            try:
                await group.start(60)
                await asyncio.sleep(1.0)
                before = hplib.rss_kib(tgt.pid)
                c0, k0, t0 = hplib.cpu_seconds(tgt.pid), hplib.core_times(), time.monotonic()
                group.command(
                    {
                        "cmd": "connect",
                        "start_ns": hplib.start_ns(0.3),
                        "timeout": args.idle_timeout,
                        "concurrency": args.idle_concurrency,
                    }
                )
                events = await group.gather(args.idle_timeout + 60, "connected")
                c1, k1, t1 = hplib.cpu_seconds(tgt.pid), hplib.core_times(), time.monotonic()
                own = (c1 - c0) / (t1 - t0) * 100
                check_noise(ctx, tgt.label, "connect", own, hplib.busy_pct(k0, k1, ctx.pin.server))
                await asyncio.sleep(2.0)  # let the last sessions settle
                after = hplib.rss_kib(tgt.pid)
            finally:
                await group.stop()
            connected = sum(e["connected"] for e in events)
            still_open = sum(e["still_open"] for e in events)
            seconds = max(e["seconds"] for e in events)
            failures = _sum_dicts([e["failures"] for e in events])
            handshake = Hist.merged(e["handshake"] for e in events)
            side = tgt.side
            suffix = "" if db in (None, "sqlite") else f", {db}"
            dbs = ctx.dbs(4) if side == "baseline" else [db]
            finished = connected == count
            rate = (
                connected / seconds if finished and seconds > 0 else connected / args.idle_timeout
            )
            per_conn = (after - before) / connected if connected else None
            log(
                f"  {tgt.label}: {connected} of {count} connected in {seconds:.1f} s "
                f"({rate:,.0f}/s), handshake p50/p99 {handshake.pct_ms(0.5) or 0:.0f}/"
                f"{handshake.pct_ms(0.99) or 0:.0f} ms, "
                f"RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB"
                f" ({per_conn or 0:.1f} KiB/conn), {still_open} still open, failures {failures}"
            )
            for d in dbs:
                sfx = "" if d in (None, "sqlite") else f", {d}"
                r = ctx.report.row(
                    "4",
                    f"connect rate{sfx}",
                    "conns/s",
                    at_least(2000, "/s") if side == "chat" and d == "sqlite" else None,
                )
                (r.chat if side == "chat" else r.baseline).append(rate)
                if not finished:
                    r.notes.append(
                        f"{tgt.label} run {run} did not finish: "
                        f"{connected} of {count} connected in "
                        f"{args.idle_timeout:g} s (rate = connected / timeout)"
                    )
                m = ctx.report.row(
                    "4",
                    f"server memory per connection{sfx}",
                    "KiB",
                    at_most(25, "KiB") if side == "chat" and d == "sqlite" else None,
                )
                if per_conn is not None:
                    (m.chat if side == "chat" else m.baseline).append(per_conn)
            if failures:
                ctx.report.note(f"s4 {tgt.label} run {run}: failures {failures}")
            if still_open < connected:
                ctx.report.note(
                    f"s4 {tgt.label} run {run}: {connected - still_open} sockets closed while idle"
                )
            ctx.report.raw.append(
                {
                    "scenario": "4",
                    "run": run,
                    "target": tgt.label,
                    "connected": connected,
                    "wanted": count,
                    "seconds": seconds,
                    "rate": rate,
                    "rss_before_kib": before,
                    "rss_after_kib": after,
                    "kib_per_conn": per_conn,
                    "failures": failures,
                    "handshake_p50_ms": handshake.pct_ms(0.5),
                    "handshake_p99_ms": handshake.pct_ms(0.99),
                    "suffix": suffix,
                }
            )


# --- scenario 5: ack latency at a fixed rate ---------------------------------------------------


async def scenario_fixed(ctx: Ctx, run: int) -> None:
    args = ctx.args
    rooms = [f"fixed-{i}" for i in range(args.fixed_rooms)]
    conns, member_map = layout(rooms, args.fixed_members)
    rate = args.fixed_rate / len(conns)
    targets: list[tuple[str, str | None]] = [("chat", db) for db in ctx.dbs(5)] + [
        ("baseline", None)
    ]
    for name, db in targets:
        async with target(ctx, name, db, len(conns), rooms) as tgt:
            group, ready, wanted = await traffic_group(ctx, tgt, conns)
            try:
                t = await run_phase(
                    ctx,
                    group,
                    tgt,
                    member_map,
                    {"rate": rate, "max_inflight": 10000},
                    args.warmup,
                    args.duration,
                )
            finally:
                await group.stop()
            describe(tgt.label, f"{args.fixed_rate:g} msgs/s", t)
            record_problems(ctx, tgt.label, "s5", t)
            ctx.report.raw.append(
                {"scenario": "5", "run": run, "target": tgt.label, "phase": "fixed", **t.summary()}
            )
            sides = [(tgt.side, db)] if name == "chat" else [("baseline", d) for d in ctx.dbs(5)]
            for side, d in sides:
                suffix = "" if d == "sqlite" else f", {d}"
                ctx.report.add("5", f"acks/s achieved{suffix}", "/s", side, t.acks_per_s)
                ctx.report.add("5", f"ack p50{suffix}", "ms", side, t.ack_ms(0.5))
                goal = below(25, "ms") if side == "chat" and d == "sqlite" else None
                ctx.report.add("5", f"ack p99{suffix}", "ms", side, t.ack_ms(0.99), goal)
                ctx.report.add("5", f"e2e p99{suffix}", "ms", side, t.e2e.pct_ms(0.99))
            if ready != wanted:
                ctx.report.note(f"s5 {tgt.label} run {run}: only {ready} of {wanted} sockets")


# --- scenario 6: churn -----------------------------------------------------------------------


async def scenario_churn(ctx: Ctx, run: int, name: str, minutes: int) -> None:
    args = ctx.args
    rooms = [f"churn-{i}" for i in range(args.churn_rooms)]
    bucket = args.churn_bucket
    async with target(
        ctx, name, "sqlite" if name == "chat" else None, args.churn_users, rooms
    ) as tgt:
        spec = {
            "url": tgt.url,
            "mode": "churn",
            "deflate": args.deflate,
            "tokens": tgt.tokens,
            "rooms": rooms,
            "body_bytes": args.body_bytes,
        }
        gen = hplib.LoadGen(spec, ctx.work, ctx.pin, 0)
        rss_samples: list[tuple[float, int]] = []
        stop_sampling = asyncio.Event()

        async def sample() -> None:
            while not stop_sampling.is_set():
                with contextlib.suppress(OSError, BenchError):
                    rss_samples.append((time.monotonic(), hplib.rss_kib(tgt.pid)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_sampling.wait(), 1.0)

        sampler = asyncio.create_task(sample())
        try:
            await gen.start()
            await gen.event(30, "ready")
            gen.command(
                {
                    "cmd": "churn",
                    "start_ns": hplib.start_ns(0.3),
                    "target": args.churn_sockets,
                    "open_rate": args.churn_rate,
                    "close_rate": args.churn_rate,
                    "abrupt_fraction": 0.5,
                    "send_interval": args.churn_send_interval,
                    "bucket": bucket,
                    "buckets": minutes,
                    "ramp_rate": 100,
                    "ramp_timeout": 90,
                    "connect_timeout": 10,
                    "settle": 3,
                }
            )
            ramp = await gen.event(150, "ramped")
            log(
                f"  {tgt.label}: ramped to {ramp['open']} of {ramp['target']} sockets "
                f"in {ramp['seconds']:.1f} s"
            )
            if ramp["open"] < ramp["target"]:
                ctx.report.note(
                    f"s6 {tgt.label} run {run}: ramp reached {ramp['open']} of "
                    f"{ramp['target']} sockets ({ramp['open_failed']})"
                )
            churn_start = time.monotonic()
            buckets = []
            for _ in range(minutes):
                b = await gen.event(bucket + 60, "bucket")
                buckets.append(b)
                ack = Hist.merged([b["ack"], b["censored"]])
                end = churn_start + (b["index"] + 1) * bucket
                rss = [kib for t, kib in rss_samples if t <= end + 1.0]
                rss_mib = rss[-1] / 1024 if rss else None
                log(
                    f"  {tgt.label} minute {b['index'] + 1}: ack p50/p99 "
                    f"{ack.pct_ms(0.5) or 0:.1f}/{ack.pct_ms(0.99) or 0:.1f} ms, "
                    f"{b['acks']}/{b['sends']} acked so far, opened {b['opened']} "
                    f"(failed {b['open_failed']}), closed {b['closed_clean']}"
                    f"+{b['closed_abrupt']} abrupt, lost {b['lost']}, open {b['open_at_end']}, "
                    f"RSS {rss_mib or 0:.0f} MiB, load CPU {b['cpu_s'] / bucket * 100:.0f}%"
                )
                k = b["index"] + 1
                if b["open_failed"] or b["lost"] or b["refused"]:
                    ctx.report.note(
                        f"s6 {tgt.label} run {run} minute {k}: open failures {b['open_failed']}, "
                        f"closed by the server {b['lost']} (reopened), refused {b['refused']}"
                    )
            result = await gen.event(120, "result")
            closed_at = int(result["all_closed_ns"]) / 1e9
            for final in result["buckets"]:
                # Late acks are in now; a send whose socket closed first counts with the
                # time it had waited, which makes the quantile a lower bound.
                k = final["index"] + 1
                both = Hist.merged([final["ack"], final["censored"]])
                goal = below(100, "ms") if tgt.side == "chat" else None
                row = ctx.report.row("6", f"ack p99, minute {k}", "ms", goal)
                p99 = both.pct_ms(0.99)
                if p99 is not None:
                    (row.chat if tgt.side == "chat" else row.baseline).append(p99)
                if final["unacked_at_close"] > 0.01 * max(1, final["sends"]):
                    row.notes.append(
                        f"{tgt.label} run {run}: {final['unacked_at_close']} of {final['sends']} "
                        "sends never acknowledged (socket closed first), counted with their "
                        "wait: a lower bound"
                    )
                end = churn_start + k * bucket
                rss = [kib for t, kib in rss_samples if t <= end + 1.0]
                ctx.report.add(
                    "6", f"RSS, minute {k}", "MiB", tgt.side, rss[-1] / 1024 if rss else None
                )
            if result.get("errors") or result.get("closes"):
                ctx.report.note(
                    f"s6 {tgt.label} run {run}: errors {result['errors']}, "
                    f"server closes {result['closes']}"
                )
            if result.get("gaps") or result.get("out_of_order"):
                ctx.report.note(
                    f"s6 {tgt.label} run {run}: seq gaps {result['gaps']}, "
                    f"out of order {result['out_of_order']}"
                )
        finally:
            stop_sampling.set()
            await sampler
            await gen.stop()
        rss_by_minute = []
        for k in range(minutes):
            end = churn_start + (k + 1) * bucket
            before_end = [kib for t, kib in rss_samples if t <= end + 1.0]
            if before_end:
                rss_by_minute.append(before_end[-1] / 1024)
        if len(rss_by_minute) >= 3:
            ref = rss_by_minute[1]
            growth = (max(rss_by_minute[2:]) - ref) / ref * 100
            goal = at_most(10, "%") if tgt.side == "chat" else None
            ctx.report.add("6", "RSS growth after minute 2", "%", tgt.side, growth, goal)
        if tgt.chat is not None:
            grace = float(tgt.chat.settings.get("presence_grace", 3.0))
            deadline = time.monotonic() + grace + args.presence_timeout
            empty_after: float | None = None
            last: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                try:
                    last = await hplib.presence(tgt.chat)
                except Exception as exc:
                    ctx.report.note(f"s6 presence poll failed: {exc!r}")
                    break
                if not last:
                    empty_after = time.monotonic() - closed_at
                    break
                await asyncio.sleep(0.1)
            goal = at_most(grace + 1.0, f"s (grace {grace:g} s + 1 s)")
            row = ctx.report.row("6", "presence empty after the last leave", "s", goal)
            if empty_after is not None:
                row.chat.append(empty_after)
                log(f"  presence empty {empty_after:.2f} s after the last socket closed")
            else:
                users = sum(len(r["users"]) for r in last)
                row.notes.append(
                    f"run {run}: presence not empty {grace + args.presence_timeout:g} s "
                    "after the last leave "
                    f"({users} users in {len(last)} rooms still listed)"
                )
        ctx.report.raw.append(
            {
                "scenario": "6",
                "run": run,
                "target": tgt.label,
                "buckets": buckets,
                "rss_mib_by_minute": rss_by_minute,
            }
        )


# --- main ------------------------------------------------------------------------------------


async def run_all(ctx: Ctx) -> None:
    args = ctx.args
    scenarios = [int(s) for s in args.scenarios.split(",") if s.strip()]
    for number in scenarios:
        runs = args.churn_runs if number == 6 else args.runs
        for run in range(1, runs + 1):
            for attempt in range(args.noisy_retries + 1):
                ctx.noisy = []
                snapshot = ctx.report.snapshot()
                await run_once(ctx, number, run, runs)
                if not ctx.noisy or number == 6:  # scenario 6 is too long to repeat
                    for text in ctx.noisy:
                        ctx.report.note(f"scenario {number} run {run} (noisy): {text}")
                    break
                if attempt == args.noisy_retries:
                    ctx.report.note(
                        f"scenario {number} run {run} kept although still noisy after "
                        f"{attempt + 1} attempts: {'; '.join(ctx.noisy)}"
                    )
                    break
                log(f"scenario {number}, run {run} was noisy; measuring it again: {ctx.noisy}")
                ctx.report.restore(snapshot)
                ctx.report.discarded.append(
                    {"scenario": number, "run": run, "attempt": attempt + 1, "why": ctx.noisy}
                )


async def run_once(ctx: Ctx, number: int, run: int, runs: int) -> None:
    args = ctx.args
    log(f"scenario {number}, run {run} of {runs}")
    started = time.monotonic()
    try:
        if number == 1:
            await scenario_fanout(ctx, 1, 1, args.members, run)
        elif number == 2:
            await scenario_fanout(ctx, 2, 10, args.members, run)
        elif number == 3:
            await scenario_dm(ctx, run)
        elif number == 4:
            await scenario_idle(ctx, run)
        elif number == 5:
            await scenario_fixed(ctx, run)
        elif number == 6:
            await scenario_churn(ctx, run, "chat", args.churn_minutes)
            if args.churn_baseline_minutes > 0:
                await scenario_churn(ctx, run, "baseline", args.churn_baseline_minutes)
        else:
            raise BenchError(f"no scenario {number}")
    except BenchError as exc:
        ctx.report.note(f"scenario {number} run {run} failed: {exc}")
    except Exception as exc:  # a bug here must not lose the other scenarios
        traceback.print_exc()
        ctx.report.note(f"scenario {number} run {run} failed: {exc!r}")
    finally:
        hplib.kill_children()  # whatever a failed run left behind
    log(f"scenario {number}, run {run}: {time.monotonic() - started:.0f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--scenarios", default="1,2,3,4,5,6", help="comma-separated scenario numbers")
    p.add_argument("--runs", type=int, default=3, help="runs per scenario (medians are reported)")
    p.add_argument(
        "--db",
        choices=("auto", "sqlite", "postgres", "both"),
        default="auto",
        help="auto: SQLite, and PostgreSQL too for scenarios 3 and 5",
    )
    p.add_argument(
        "--pg-url",
        default=os.environ.get(
            "CHAT_BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
        help="an existing PostgreSQL database to create throwaway ones from",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke: scenario 1 saturation, one short run; exit 1 below half the goal ratio",
    )
    p.add_argument(
        "--out", type=Path, default=HERE / "results", help="where results.json and results.md go"
    )
    p.add_argument(
        "--procs", type=int, default=1, help="Node generator processes (all on the load cores)"
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument("--no-ceiling", action="store_true", help="skip the generator-ceiling check")
    p.add_argument(
        "--seeding",
        choices=("db", "http"),
        default="db",
        help="db: insert users and mint tokens; http: register and sign in",
    )
    p.add_argument("--baseline-loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    p.add_argument("--deflate", action="store_true", help="clients offer permessage-deflate")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before each measured window")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of each measured window")
    p.add_argument(
        "--drain",
        type=float,
        default=3.0,
        help="most seconds to wait for in-flight sends after a window",
    )
    p.add_argument(
        "--drain-closed",
        type=float,
        default=60.0,
        help="most seconds to wait, after a closed-loop window, for every send to be answered",
    )
    p.add_argument(
        "--window",
        type=int,
        default=1,
        help="sends in flight per client at saturation (closed loop)",
    )
    p.add_argument("--body-bytes", type=int, default=64, help="message body size")
    p.add_argument("--members", type=int, default=100, help="clients per room in scenarios 1 and 2")
    p.add_argument(
        "--connect-concurrency",
        type=int,
        default=100,
        help="handshakes in flight per generator while setting up",
    )
    p.add_argument(
        "--setup-timeout",
        type=float,
        default=120.0,
        help="seconds to connect and join before measuring anyway",
    )
    p.add_argument("--dm-rooms", type=int, default=500, help="scenario 3 rooms (2 clients each)")
    p.add_argument("--idle-connections", type=int, default=10_000, help="scenario 4 sockets")
    p.add_argument("--idle-per-user", type=int, default=10, help="scenario 4 sockets per user")
    p.add_argument(
        "--idle-timeout", type=float, default=30.0, help="scenario 4: seconds to open them all"
    )
    p.add_argument(
        "--idle-concurrency", type=int, default=256, help="scenario 4 handshakes in flight"
    )
    p.add_argument("--fixed-rate", type=float, default=1000.0, help="scenario 5 messages/s in all")
    p.add_argument("--fixed-rooms", type=int, default=100)
    p.add_argument(
        "--fixed-members", type=int, default=5, help="scenario 5 clients per room, all sending"
    )
    p.add_argument("--churn-minutes", type=int, default=4)
    p.add_argument(
        "--churn-baseline-minutes", type=int, default=2, help="0 skips the baseline churn"
    )
    p.add_argument("--churn-runs", type=int, default=1)
    p.add_argument("--churn-bucket", type=float, default=60.0, help="seconds per reported 'minute'")
    p.add_argument("--churn-sockets", type=int, default=600)
    p.add_argument(
        "--churn-rate", type=float, default=40.0, help="sockets opened and closed per second"
    )
    p.add_argument(
        "--churn-send-interval",
        type=float,
        default=3.0,
        help="mean seconds between one socket's sends",
    )
    p.add_argument("--churn-rooms", type=int, default=50)
    p.add_argument("--churn-users", type=int, default=1000)
    p.add_argument(
        "--presence-timeout",
        type=float,
        default=30.0,
        help="seconds past the grace to wait for empty presence",
    )
    p.add_argument(
        "--noisy-retries",
        type=int,
        default=2,
        help="times a run is measured again when other processes took a measured core",
    )
    p.add_argument(
        "--noise-threshold",
        type=float,
        default=35.0,
        help="points of a measured core's busy time not used by the measured process "
        "(kernel loopback work included) above which a run counts as noisy",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    args = p.parse_args(argv)
    if args.quick:
        args.scenarios = "1"
        args.runs = 1
        args.warmup = min(args.warmup, 2.0)
        args.duration = min(args.duration, 5.0)
        args.no_ceiling = True
        args.noisy_retries = min(args.noisy_retries, 1)
    return args


async def amain(args: argparse.Namespace) -> int:
    pin = hplib.pinning(not args.no_pin)
    if pin.active:
        os.sched_setaffinity(0, pin.load)  # this script stays off the server's core
    hplib.ensure_loadgen()
    work = Path(tempfile.mkdtemp(prefix="bench-hotpath-"))
    report = Report()
    ctx = Ctx(args, pin, work, report)
    log(f"work directory {work}; {pin.describe()}")
    started = time.monotonic()
    try:
        await run_all(ctx)
    finally:
        hplib.kill_children()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "runs": args.runs,
        "churn_runs": args.churn_runs,
        "pinning": pin.describe(),
        "procs": args.procs,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "node": _node_version(),
        "seconds": round(time.monotonic() - started, 1),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    _add_generator_summary(report)
    text = markdown(report, meta)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text + "\n")
    payload = {
        "meta": meta,
        "rows": [r.to_json() for r in report.rows.values()],
        "generator": report.generator,
        "notes": report.notes,
        "runs": report.raw,
        "discarded_noisy_runs": report.discarded,
    }
    (args.out / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    log(f"wrote {args.out / 'results.md'} and results.json in {meta['seconds']:.0f} s")
    if args.quick:
        row = report.rows.get(("1", "saturation"))
        ratio = row.ratio if row else None
        if ratio is None:
            print("quick: no ratio measured (see the notes above)", file=sys.stderr)
            return 2
        verdict = "ok" if ratio >= QUICK_THRESHOLD else "GROSS REGRESSION"
        print(
            f"quick: scenario 1 ratio {ratio:.2f}x baseline "
            f"(fails below {QUICK_THRESHOLD}): {verdict}",
            file=sys.stderr,
        )
        return 0 if ratio >= QUICK_THRESHOLD else 1
    return 0


def _add_generator_summary(report: Report) -> None:
    gen = report.generator
    baseline = gen.get("baseline s1 saturation (deliveries/s)")
    capacity = gen.get(
        "generator capacity at baseline s1 saturation (deliveries/s per core of its CPU)"
    )
    ceiling = gen.get("generator ceiling: s1 deliveries/s against a Node ws server")
    if baseline and capacity:
        frac = statistics.median(baseline) / statistics.median(capacity) * 100
        gen["baseline s1 saturation as % of the generator's capacity"] = [frac]
        if frac > 80:
            report.note(
                f"at the baseline's saturation the generator used {frac:.0f}% of its core: it "
                "may limit the baseline, whose figure is then a lower bound (and the ratio "
                "an upper bound)"
            )
    if baseline and ceiling:
        frac = statistics.median(baseline) / statistics.median(ceiling) * 100
        gen["baseline s1 saturation as % of the generator ceiling"] = [frac]


def _node_version() -> str | None:
    import subprocess

    with contextlib.suppress(Exception):
        return subprocess.run(
            [hplib.node_binary(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    return None


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: stop like Ctrl-C, killing what was started


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = asyncio.run(amain(args))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        hplib.kill_children()
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
