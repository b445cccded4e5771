"""Fan-out to N receivers in one room: the memory broker against the Redis broker.

    .venv/bin/python bench/bench_fanout.py [--receivers 10,100] [--messages 2000]
        [--redis redis://127.0.0.1:6379/0] [--skip-server] [--skip-hub]

Two levels, one invocation, every figure also given as a ratio to the memory
broker's (the baseline: one process, no network):

- `hub`: in process, no sockets or database. `Hub.publish_room` → broker →
  the hub's dispatch → N real `Connection` queues and writer tasks, whose
  "socket" notes the arrival time. Isolates what the broker costs.
- `server`: real `chat serve` processes and WebSocket clients on SQLite. One
  bot sends, N connections of one user receive. Configurations: `memory`
  (one process), `redis-1` (one process through Redis) and `redis-2` (sender
  on server A, receivers on server B: the scale-out path).

Each level runs two phases: `flood` (publish as fast as possible, one at a
time as the room lock does; messages/s = messages / time until the last
receiver had the last one; its latencies are mostly queueing: with the memory
broker the hub publishes the whole flood before any writer runs) and `paced`
(a fixed rate below saturation: 200/s in the hub, 20/s through a server; the
latency a user sees when the server is not overloaded). Latency is from just
before publish (hub) or send (server) to each receiver's arrival: p50 and p99
over every (message, receiver) pair. It is not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat.backends.fanout import Broker  # noqa: E402
from chat.backends.memory_fanout import MemoryBroker  # noqa: E402
from chat.backends.memory_presence import MemoryPresence  # noqa: E402
from chat.backends.redis_fanout import RedisBroker  # noqa: E402
from chat.hub import Connection, Hub  # noqa: E402
from chat.protocol import UserRef  # noqa: E402


@dataclass
class Result:
    level: str
    broker: str
    receivers: int
    phase: str
    messages: int
    seconds: float
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# --- hub level -------------------------------------------------------------------


class Arrivals:
    """Arrival times by (receiver, seq); wakes the bench when all are in."""

    def __init__(self, expected: int) -> None:
        self.sent: dict[int, float] = {}
        self.latencies: list[float] = []
        self.expected = expected
        self.last = 0.0
        self.done = asyncio.Event()

    def sender(self) -> Callable[[str], Awaitable[None]]:
        async def send(payload: str) -> None:
            now = time.perf_counter()
            if not payload.startswith('{"seq":'):
                return  # a presence event
            seq = int(payload[7:-1])  # '{"seq":123}'
            self.latencies.append(now - self.sent[seq])
            self.last = now
            if len(self.latencies) >= self.expected:
                self.done.set()

        return send


async def _close(code: int, reason: str) -> None:
    return None


async def hub_run(
    make_broker: Callable[[], Broker], receivers: int, messages: int, pace: float | None
) -> tuple[float, list[float]]:
    broker = make_broker()

    hub = Hub(broker, partial(MemoryPresence, 0))
    await hub.start()
    arrivals = Arrivals(receivers * messages)
    conns = []
    # One user with N connections (as at the server level): no presence chatter.
    user = UserRef(id=1, name="reader", role="user")
    for _ in range(receivers):
        conn = Connection(user, arrivals.sender(), _close, queue_size=messages + 1000)
        await hub.register(conn)
        await hub.join(conn, "bench")
        hub.finish_replay(conn, "bench", 0)
        conns.append(conn)
    started = time.perf_counter()
    for seq in range(1, messages + 1):
        arrivals.sent[seq] = time.perf_counter()
        await hub.publish_room("bench", f'{{"seq":{seq}}}', seq=seq)
        if pace:
            await asyncio.sleep(max(0.0, started + seq / pace - time.perf_counter()))
    await asyncio.wait_for(arrivals.done.wait(), 60)
    elapsed = arrivals.last - started
    for conn in conns:
        await hub.unregister(conn)
    await hub.stop()
    return elapsed, arrivals.latencies


async def hub_level(
    redis_url: str, receivers_list: list[int], messages: int, pace: float
) -> list[Result]:
    results = []
    brokers: dict[str, Callable[[], Broker]] = {
        "memory": MemoryBroker,
        "redis": lambda: RedisBroker.connect(redis_url, prefix=f"bench{uuid.uuid4().hex[:6]}:"),
    }
    for n in receivers_list:
        for name, make in brokers.items():
            await hub_run(make, n, min(200, messages), None)  # warm up
            seconds, lat = await hub_run(make, n, messages, None)
            results.append(Result("hub", name, n, "flood", messages, seconds, lat))
            paced = max(50, messages // 4)
            seconds, lat = await hub_run(make, n, paced, pace)
            results.append(Result("hub", name, n, "paced", paced, seconds, lat))
            print(f"  hub {name:8} n={n:<4} done", file=sys.stderr)
    return results


# --- server level ----------------------------------------------------------------


async def server_phase(
    sender_url: str,
    receiver_url: str,
    bot_token: str,
    user_token: str,
    room: str,
    receivers: int,
    messages: int,
    pace: float | None,
) -> tuple[float, list[float]]:
    import websockets

    async def connect(url: str, token: str) -> Any:
        ws = await websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=2**22
        )
        await ws.recv()  # hello
        await ws.send(json.dumps({"type": "join", "room": room}))
        while json.loads(await ws.recv())["type"] != "joined":
            pass
        return ws

    async with asyncio.timeout(60):  # fail loudly rather than hang on a stuck join
        readers = [await connect(receiver_url, user_token) for _ in range(receivers)]
        sender = await connect(sender_url, bot_token)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    last = 0.0

    async def read(ws: Any) -> None:
        nonlocal last
        got = 0
        while got < messages:
            frame = json.loads(await ws.recv())
            if frame["type"] == "message":
                now = time.perf_counter()
                latencies.append(now - sent[frame["body"]])
                last = max(last, now)
                got += 1

    async def drain_acks() -> None:
        acks = 0
        while acks < messages:
            frame = json.loads(await sender.recv())
            if frame["type"] == "ack":
                acks += 1
            elif frame["type"] == "error":
                raise RuntimeError(frame)

    reading = [asyncio.create_task(read(ws)) for ws in readers]
    acking = asyncio.create_task(drain_acks())
    started = time.perf_counter()
    for i in range(messages):
        body = f"m{i}-{uuid.uuid4().hex[:6]}"
        sent[body] = time.perf_counter()
        await sender.send(json.dumps({"type": "send", "room": room, "body": body, "ref": body}))
        if pace:
            await asyncio.sleep(max(0.0, started + (i + 1) / pace - time.perf_counter()))
        elif i % 50 == 49:
            await asyncio.sleep(0)  # let the readers keep up with the socket
    await asyncio.wait_for(asyncio.gather(acking, *reading), 120)
    for ws in [*readers, sender]:
        await ws.close()
    return last - started, latencies


def server_level(
    redis_url: str, receivers_list: list[int], messages: int, pace: float
) -> list[Result]:
    from tests.harness import Api, ServerProcess

    work = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    settings = {
        "bot_send_rate": 1_000_000,
        "bot_send_burst": 1_000_000,
        "max_connections_per_user": 10_000,
        "handshakes_per_ip_per_second": 100_000,
        "handshakes_per_ip_burst": 100_000,
        "outbound_buffer_bytes": 256 << 20,
        "presence_grace": 0,
    }
    results: list[Result] = []
    configs: dict[str, tuple[bool, int]] = {"memory": (False, 1), "redis-1": (True, 1)}
    configs["redis-2"] = (True, 2)
    for name, (use_redis, processes) in configs.items():
        database = f"sqlite+aiosqlite:///{work / f'{name}.db'}"
        extra: dict[str, Any] = dict(settings)
        if use_redis:
            extra |= {"redis_url": redis_url, "redis_prefix": f"bench{uuid.uuid4().hex[:6]}:"}
        servers = []
        for i in range(processes):
            d = work / f"{name}-{i}"
            d.mkdir()
            servers.append(ServerProcess(database, d, **extra).start())
        try:
            api = Api(servers[0])
            admin_name = f"admin{uuid.uuid4().hex[:6]}"
            done = servers[0].cli(
                "users", "create", admin_name, "--admin", "--password-stdin", stdin="pw-bench-1\n"
            )
            assert done.returncode == 0, done.stderr
            tokens = api.login(admin_name, "pw-bench-1")
            from tests.harness import Account

            admin = Account(0, admin_name, "", tokens["access_token"], "", "admin")
            bot = api.bot(admin)
            reader = api.user()
            sender_url, receiver_url = servers[0].ws, servers[-1].ws
            for n in receivers_list:
                room = api.room(admin)
                asyncio.run(
                    server_phase(
                        sender_url, receiver_url, bot.token, reader.token, room, n, 100, None
                    )
                )  # warm up
                for phase, count, rate in (
                    ("flood", messages, None),
                    ("paced", max(40, messages // 5), pace),
                ):
                    room = api.room(admin)
                    seconds, lat = asyncio.run(
                        server_phase(
                            sender_url, receiver_url, bot.token, reader.token, room, n, count, rate
                        )
                    )
                    results.append(Result("server", name, n, phase, count, seconds, lat))
                print(f"  server {name:8} n={n:<4} done", file=sys.stderr)
            api.close()
        finally:
            for server in servers:
                server.stop()
    return results


# --- report ----------------------------------------------------------------------


def report(results: list[Result]) -> str:
    lines = [
        f"{'level':6} {'broker':8} {'recv':>5} {'phase':6} {'msgs':>6} {'msg/s':>9} "
        f"{'deliv/s':>10} {'p50 ms':>8} {'p99 ms':>8}  {'msg/s x':>8} {'p50 x':>7} {'p99 x':>7}"
    ]
    base: dict[tuple[str, int, str], Result] = {
        (r.level, r.receivers, r.phase): r for r in results if r.broker == "memory"
    }
    for r in results:
        b = base.get((r.level, r.receivers, r.phase))
        ratio = ""
        if b is not None:
            ratio = f"{r.rate / b.rate:8.2f} {r.pct(0.5) / b.pct(0.5):7.2f} "
            ratio += f"{r.pct(0.99) / b.pct(0.99):7.2f}"
        lines.append(
            f"{r.level:6} {r.broker:8} {r.receivers:5d} {r.phase:6} {r.messages:6d} "
            f"{r.rate:9.0f} {r.rate * r.receivers:10.0f} {r.pct(0.5):8.2f} {r.pct(0.99):8.2f}  "
            + ratio
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", default="10,100", help="comma-separated receiver counts")
    parser.add_argument("--messages", type=int, default=2000, help="messages per flood phase")
    parser.add_argument("--pace", type=float, default=200.0, help="hub level paced messages/s")
    parser.add_argument(
        "--server-pace", type=float, default=20.0, help="server level paced messages/s"
    )
    parser.add_argument(
        "--redis", default=os.environ.get("CHAT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--skip-hub", action="store_true")
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--server-messages", type=int, default=300, help="per server flood")
    args = parser.parse_args()
    receivers = [int(n) for n in args.receivers.split(",")]
    results: list[Result] = []
    if not args.skip_hub:
        results += asyncio.run(hub_level(args.redis, receivers, args.messages, args.pace))
    if not args.skip_server:
        results += server_level(args.redis, receivers, args.server_messages, args.server_pace)
    print(report(results))
    print(
        f"\nsingle runs; {os.cpu_count()} CPUs, python {sys.version.split()[0]}; "
        "x columns are ratios to the memory broker at the same level, receivers and phase"
    )


if __name__ == "__main__":
    main()
