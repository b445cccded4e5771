"""Chat latency in a room while that room is being exported, against a real server.

    .venv/bin/python bench/export_latency.py [--messages 20000] [--seconds 15] [--rate 20]

Starts `chat serve` on a fresh SQLite database (or `--database-url`), seeds one room
with `--messages` messages, then measures, for the same room:

1. baseline: a sender posts `--rate` messages a second for `--seconds` seconds; a
   second connection in the room receives them. Latency is send -> `message` frame on
   the receiver (and send -> `ack` on the sender);
2. the same while exports of that room run back to back (JSON Lines and CSV
   alternately, each over all `--messages` messages), started by an admin.

Prints p50/p90/p99/max for both phases, how many exports finished and their speed,
and the server's peak resident memory in each phase (the export streams in batches,
so memory should stay flat). `--json PATH` also writes the figures as JSON.

`--redis URL` runs the server on Redis (tasks still in process); with `--worker` too,
the exports run in a `chat worker` process instead (`CHAT_RUN_TASKS=never`), so the
two runs compare chat latency with the export in the chat process and out of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.dbseed import seed_messages  # noqa: E402
from tests.harness import Api, ServerProcess, WorkerProcess, connect, join  # noqa: E402


@dataclass
class Phase:
    name: str
    delivery: list[float] = field(default_factory=list)  # seconds
    ack: list[float] = field(default_factory=list)
    lost: int = 0
    peak_rss_mb: float = 0.0
    exports: int = 0
    export_rows_per_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "phase": self.name,
            "messages": len(self.delivery),
            "lost": self.lost,
            "delivery_ms": percentiles(self.delivery),
            "ack_ms": percentiles(self.ack),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "exports_finished": self.exports,
            "export_rows_per_s": round(statistics.mean(self.export_rows_per_s))
            if self.export_rows_per_s
            else None,
        }


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": round(ordered[-1] * 1000, 2),
    }


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(0.05)


async def measure(
    server: ServerProcess,
    sender_token: str,
    receiver_token: str,
    room: str,
    phase: Phase,
    args: Any,
) -> None:
    sender = await connect(server, sender_token)
    receiver = await connect(server, receiver_token)
    await join(sender, room)
    await join(receiver, room)
    sent: dict[str, float] = {}
    delivered: dict[str, float] = {}
    acked: dict[str, float] = {}
    total = int(args.seconds * args.rate)

    async def read(ws: Any, into: dict[str, float], kind: str) -> None:
        async for raw in ws:
            now = time.perf_counter()
            frame = json.loads(raw)
            if frame.get("type") != kind:
                continue
            key = frame["ref"] if kind == "ack" else frame["body"].split(" ", 1)[0]
            if key in sent:
                into[key] = now
                if kind == "message" and len(into) >= total:
                    return

    receiving = asyncio.create_task(read(receiver, delivered, "message"))
    acking = asyncio.create_task(read(sender, acked, "ack"))
    started = time.perf_counter()
    for i in range(total):
        due = started + i / args.rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        ref = uuid.uuid4().hex
        sent[ref] = time.perf_counter()
        await sender.send(
            json.dumps({"type": "send", "room": room, "body": f"{ref} probe", "ref": ref})
        )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(receiving, 30)
    await asyncio.sleep(0.2)
    acking.cancel()
    for ref, t0 in sent.items():
        if ref in delivered:
            phase.delivery.append(delivered[ref] - t0)
        else:
            phase.lost += 1
        if ref in acked:
            phase.ack.append(acked[ref] - t0)
    await sender.close()
    await receiver.close()


def export_loop(
    base_url: str, admin_headers: dict[str, str], room: str, stop: Any, results: Any
) -> None:
    """Run exports of `room` back to back until `stop` is set (in its own process, so
    its polling does not compete with the measuring client for the GIL)."""
    import httpx

    fmt = "jsonl"
    done, speeds = 0, []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while not stop.is_set():
            r = client.post(
                "/api/tasks",
                json={"kind": "export", "params": {"room": room, "format": fmt}},
                headers=admin_headers,
            )
            r.raise_for_status()
            task_id = r.json()["id"]
            while True:
                task = client.get(f"/api/tasks/{task_id}", headers=admin_headers).json()
                if task["status"] not in ("queued", "running"):
                    break
                time.sleep(0.2)
            if task["status"] == "succeeded":
                done += 1
                took = _seconds(task["finished_at"]) - _seconds(task["started_at"])
                if took > 0:
                    speeds.append(task["result"]["rows"] / took)
            fmt = "csv" if fmt == "jsonl" else "jsonl"
    results.put((done, speeds))


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def report(results: list[dict[str, Any]]) -> None:
    print()
    head = ("phase", "msgs", "lost", "delivery p50/p90/p99/max ms", "ack p50/p99 ms", "RSS MB")
    print(f"{head[0]:<15}{head[1]:>6}{head[2]:>6}  {head[3]:<30}{head[4]:<18}{head[5]:>8}", end="")
    print(f"{'exports':>9}{'rows/s':>9}")
    for r in results:
        d, a = r["delivery_ms"], r["ack_ms"]
        delivery = f"{d.get('p50')}/{d.get('p90')}/{d.get('p99')}/{d.get('max')}"
        ack = f"{a.get('p50')}/{a.get('p99')}"
        print(f"{r['phase']:<15}{r['messages']:>6}{r['lost']:>6}  {delivery:<30}{ack:<18}", end="")
        print(f"{r['peak_rss_mb']:>8}{r['exports_finished']:>9}{r['export_rows_per_s'] or '-':>9}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000, help="history size of the room")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3, help="baseline/export rounds, alternating")
    parser.add_argument("--rate", type=float, default=20.0, help="probe messages per second")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--redis", default=None, help="a Redis URL: the server shares it")
    parser.add_argument("--worker", action="store_true", help="exports run in `chat worker`")
    args = parser.parse_args()
    if args.worker and not args.redis:
        parser.error("--worker needs --redis")

    workdir = Path(tempfile.mkdtemp(prefix="bench-export-"))
    url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    site: dict[str, Any] = {}
    if args.redis:
        site = {"redis_url": args.redis, "redis_prefix": f"bench{uuid.uuid4().hex[:8]}:"}
        site["run_tasks"] = "never" if args.worker else "always"
    server = ServerProcess(
        url, workdir, send_rate=1000, send_burst=1000, task_concurrency=2, **site
    )
    server.start()
    worker = WorkerProcess(server.env, workdir).start() if args.worker else None
    api = Api(server)
    try:
        admin = api.admin()
        sender, receiver = api.user(), api.user()
        room = api.room(sender)
        seeded = time.perf_counter()
        asyncio.run(
            seed_messages(
                url, room, sender.name, [f"history {i} " + "x" * 80 for i in range(args.messages)]
            )
        )
        took = time.perf_counter() - seeded
        print(f"seeded {args.messages} messages in {took:.1f}s; load average {os.getloadavg()}")

        baseline = Phase("baseline")
        loaded = Phase("during export")
        ctx = multiprocessing.get_context("spawn")
        for round_ in range(args.rounds):
            with RssSampler(server.proc.pid) as rss:
                asyncio.run(measure(server, sender.token, receiver.token, room, baseline, args))
            baseline.peak_rss_mb = max(baseline.peak_rss_mb, rss.peak)

            stop, results = ctx.Event(), ctx.Queue()
            exporter = ctx.Process(
                target=export_loop, args=(server.http, admin.headers, room, stop, results)
            )
            with RssSampler(server.proc.pid) as rss:
                exporter.start()
                time.sleep(1.0)  # the exporter process starts and its first export gets going
                asyncio.run(measure(server, sender.token, receiver.token, room, loaded, args))
                stop.set()
                done, speeds = results.get(timeout=120)
                exporter.join()
            loaded.peak_rss_mb = max(loaded.peak_rss_mb, rss.peak)
            loaded.exports += done
            loaded.export_rows_per_s.extend(speeds)
            print(f"round {round_ + 1}/{args.rounds} done")

        results = [baseline.summary(), loaded.summary()]
        report(results)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            meta: dict[str, Any] = {"messages": args.messages, "rate": args.rate}
            meta.update(rounds=args.rounds, redis=bool(args.redis), worker=args.worker)
            meta["load_average"] = os.getloadavg()
            meta["cpus"] = os.cpu_count()
            args.json.write_text(json.dumps({**meta, "results": results}, indent=2))
    finally:
        api.close()
        server.stop()
        if worker is not None:
            worker.stop()


if __name__ == "__main__":
    main()
