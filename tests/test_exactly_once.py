"""Exactly-once, in-order delivery per connection across two nodes, node crashes and Redis faults.

Every test runs two real `chat serve` processes, A and B, on one fresh
PostgreSQL database and one private `redis-server` (same `CHAT_REDIS_PREFIX`).
A talks to Redis directly; B talks to it through a `FaultProxy`
(`tests/faultproxy.py`), so a test can make B alone lose pub/sub messages
while A keeps working.

What is checked, per connection and room: every seq arrives once, in order,
with no gap, whether it comes from a join's replay, a node's reorder buffer or
live delivery; and a node that missed a message on the pub/sub path delivers it
to its clients by itself (even when no later message shows the gap).

The soak (`test_soak_*`): a dozen clients in four rooms reconnect to a random
node on their own schedule and whenever their node goes away, rejoin with
`since` = the highest seq they hold, send with unique refs and resend unacked
ones; meanwhile one node is SIGKILLed and restarted, B's Redis link is cut for
a moment, Redis is killed and restarted, and the other node is SIGTERMed and
restarted. Clients record every `message` frame, never deduplicating. Its
whole schedule comes from one seed, printed at the start: replay a run with
`CHAT_SOAK_SEED=<seed>`; `CHAT_SOAK_SECONDS` sets how long clients send and
faults happen (default 60). Real timing still varies from run to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException

from tests.conftest import PG_URL, _pg_admin, fresh_pg_database
from tests.faultproxy import FaultProxy
from tests.harness import Account, Api, ServerProcess, all_messages, connect
from tests.redis_support import PrivateRedis, unique_prefix

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

# No rate limit in the way (every client connects from 127.0.0.1 and reconnects
# often), replays never truncated, quick drains and presence expiry.
SETTINGS: dict[str, Any] = {
    "send_rate": 10_000,
    "send_burst": 10_000,
    "join_rate": 10_000,
    "join_burst": 10_000,
    "handshakes_per_ip_per_second": 10_000,
    "handshakes_per_ip_burst": 10_000,
    "replay_cap": 100_000,
    "presence_grace": 0.5,
    "presence_ttl": 3,
    "drain_timeout": 5,
}
TAIL_WAIT = 10.0  # how long a node may take to deliver a message it missed live


# --- the site: A, B, one database, one Redis, a proxy in front of B's Redis ---------------


@dataclass
class Site:
    a: ServerProcess
    b: ServerProcess
    redis: PrivateRedis
    proxy: FaultProxy
    prefix: str
    api: Api

    @property
    def nodes(self) -> list[ServerProcess]:
        return [self.a, self.b]

    def channel(self, room: str) -> str:
        return f"{self.prefix}room:{room}"

    async def subscribers(self, room: str) -> int:
        """How many processes Redis has subscribed to the room's channel."""
        client = aioredis.Redis(port=self.redis.port, socket_timeout=2)
        try:
            counts = await client.pubsub_numsub(self.channel(room))
            return int(counts[0][1]) if counts else 0
        finally:
            await client.aclose()

    async def wait_subscribers(self, room: str, count: int, timeout: float = 15.0) -> None:
        await until(
            lambda: self.subscribers(room),
            lambda n: n == count,
            timeout,
            f"{count} subscribers of {room}",
        )

    async def cut_b(self, room: str) -> None:
        """B loses its Redis connections; returns once Redis no longer counts B's subscription."""
        self.proxy.cut()
        await self.wait_subscribers(room, 1)

    async def restore_b(self, room: str) -> None:
        """B may reach Redis again; returns once B is ready and subscribed to `room` again."""
        self.proxy.restore()
        await wait_ready(self.b, True)
        await self.wait_subscribers(room, 2)


async def until(
    probe: Callable[[], Any], ok: Callable[[Any], bool], timeout: float, what: str
) -> Any:
    """Call `probe` (a coroutine function) until `ok(result)`; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        with contextlib.suppress(Exception):
            last = await probe()
            if ok(last):
                return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}; last: {last!r}")
        await asyncio.sleep(0.05)


async def wait_ready(server: ServerProcess, ready: bool, timeout: float = 20.0) -> None:
    """Poll /readyz until it answers 200 (ready) or anything else (not ready)."""
    async with httpx.AsyncClient(timeout=3) as client:

        async def status() -> int:
            try:
                return (await client.get(f"{server.http}/readyz")).status_code
            except httpx.HTTPError:
                return 0

        await until(
            status,
            lambda s: (s == 200) == ready,
            timeout,
            f"{server.http}/readyz {'200' if ready else 'not 200'}",
        )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    redis = PrivateRedis(tmp_path)  # skips (or fails in CI) without redis-server
    database = fresh_pg_database()
    proxy: FaultProxy | None = None
    servers: list[ServerProcess] = []
    api: Api | None = None
    try:
        redis.start()
        proxy = FaultProxy(redis.port).start()
        prefix = unique_prefix()
        for name, url in (("a", redis.url), ("b", proxy.url)):
            workdir = tmp_path / name
            workdir.mkdir()
            server = ServerProcess(
                database, workdir, redis_url=url, redis_prefix=prefix, **SETTINGS
            )
            servers.append(server)
            server.start()
        api = Api(servers[0])
        yield Site(servers[0], servers[1], redis, proxy, prefix, api)
    finally:
        if api is not None:
            api.close()
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop(signal.SIGKILL)
        if proxy is not None:
            proxy.stop()
        redis.kill()
        _pg_admin(PG_URL, f'DROP DATABASE IF EXISTS "{database.rpartition("/")[2]}" WITH (FORCE)')


# --- a client that records every frame it gets ------------------------------------------------


class Reader:
    """One WebSocket whose frames are all recorded by a background task, never deduplicated."""

    def __init__(self, ws: ClientConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        self.frames: list[dict[str, Any]] = []
        self.closed = False
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    @classmethod
    async def open(cls, server: ServerProcess, account: Account, name: str) -> Reader:
        return cls(await connect(server, account.token, close_timeout=2), name)

    async def _run(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
                self._new.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self._new.set()

    def seqs(self, room: str) -> list[int]:
        return [f["seq"] for f in self.frames if f["type"] == "message" and f["room"] == room]

    async def wait(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not pred():
            left = deadline - asyncio.get_running_loop().time()
            if self.closed or left <= 0:
                raise AssertionError(
                    f"{self.name}: no {what} within {timeout}s"
                    f"{' (closed)' if self.closed else ''}; frames: {self._summary()}"
                )
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    async def wait_seq(self, room: str, seq: int, timeout: float = 5.0) -> None:
        await self.wait(lambda: seq in self.seqs(room), timeout, f"seq {seq} in {room}")

    async def nothing_more(self, room: str, wait: float = 0.5) -> None:
        """No further message of `room` within `wait` seconds (a short, bounded check)."""
        count = len(self.seqs(room))
        with contextlib.suppress(AssertionError):
            await self.wait(lambda: len(self.seqs(room)) > count, wait, "")
        assert len(self.seqs(room)) == count, (
            f"{self.name}: more messages after the last expected one: {self.seqs(room)}"
        )

    async def join(self, room: str, since: int | None = None) -> dict[str, Any]:
        ref = uuid.uuid4().hex
        frame: dict[str, Any] = {"type": "join", "room": room, "ref": ref}
        if since is not None:
            frame["since"] = since
        await self.ws.send(json.dumps(frame))
        return await self._answer(ref, "joined")

    async def say(self, room: str, body: str) -> dict[str, Any]:
        ref = uuid.uuid4().hex
        await self.ws.send(json.dumps({"type": "send", "room": room, "body": body, "ref": ref}))
        return await self._answer(ref, "ack")

    async def _answer(self, ref: str, kind: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((f for f in self.frames if f.get("ref") == ref), None)

        await self.wait(lambda: found() is not None, 10, f"answer to {kind} {ref}")
        frame = found()
        assert frame is not None and frame["type"] == kind, f"{self.name}: {frame}"
        return frame

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 3)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 3)

    def _summary(self) -> list[Any]:
        return [
            (f["type"], f.get("room"), f.get("seq"), f.get("last_seq"))
            for f in self.frames
            if f["type"] in ("message", "joined", "ack", "error")
        ]


# --- direct tests of the two forms and of the lost tail --------------------------------------


async def _start(
    site: Site, room_owner: Account, *readers: tuple[ServerProcess, Account, str]
) -> tuple[str, list[Reader]]:
    room = site.api.room(room_owner)
    out = []
    for server, account, name in readers:
        out.append(await Reader.open(server, account, name))
    return room, out


async def test_replay_on_b_and_its_reorder_buffer_never_give_a_seq_twice(site: Site) -> None:
    """Form 1: B lost seq N live and holds N+1 waiting for it; a client joins on B meanwhile.

    The join's replay from the database gives N and N+1. The held N+1 must not be
    pushed to that connection again when the buffer lets go of it; and B's own
    client, which was connected all along, gets N then N+1 with no jump.
    """
    alice, bob, carol = site.api.user(), site.api.user(), site.api.user()
    room, (ra, rb, rc) = await _start(
        site, alice, (site.a, alice, "alice@A"), (site.b, bob, "bob@B"), (site.b, carol, "carol@B")
    )
    try:
        await ra.join(room)
        await rb.join(room)
        first = (await ra.say(room, "before the cut"))["seq"]
        await rb.wait_seq(room, first)

        await site.cut_b(room)
        n = (await ra.say(room, "lost on the way to B"))["seq"]
        await site.restore_b(room)
        held = (await ra.say(room, "reaches B after the gap"))["seq"]
        assert held == n + 1
        joined = await rc.join(room, since=n - 1)  # at once: B may still be holding N+1
        assert joined["last_seq"] == held
        await rc.wait_seq(room, held)
        sentinel = (await ra.say(room, "sentinel"))["seq"]
        await rc.wait_seq(room, sentinel, timeout=TAIL_WAIT)
        await rc.nothing_more(room)
        await rb.wait_seq(room, sentinel, timeout=TAIL_WAIT)
        await rb.nothing_more(room)

        assert rc.seqs(room) == [n, held, sentinel], (
            f"carol joined on B with since={n - 1}: each seq once, in order"
        )
        assert rb.seqs(room) == [first, n, held, sentinel], (
            "bob, on B all along: B delivers the seq it missed live, in order"
        )
        assert ra.seqs(room) == [first, n, held, sentinel]
    finally:
        for r in (ra, rb, rc):
            await r.close()


async def test_a_seq_seen_live_before_a_reconnect_is_not_delivered_again(site: Site) -> None:
    """Form 2: dave saw K live on A, reconnects to B with since=K while B holds K.

    B lost N live (proxy cut) and holds N+1 = K waiting for it. Nothing at or
    below `since` may reach dave's new connection, from replay, buffer or live.
    """
    alice, bob, dave = site.api.user(), site.api.user(), site.api.user()
    room, (ra, rb, old) = await _start(
        site, alice, (site.a, alice, "alice@A"), (site.b, bob, "bob@B"), (site.a, dave, "dave@A")
    )
    new: Reader | None = None
    try:
        for r in (ra, rb, old):
            await r.join(room)
        first = (await ra.say(room, "before the cut"))["seq"]
        await rb.wait_seq(room, first)
        await old.wait_seq(room, first)

        await site.cut_b(room)
        n = (await ra.say(room, "lost on the way to B"))["seq"]
        await site.restore_b(room)
        new = await Reader.open(site.b, dave, "dave@B")
        k = (await ra.say(room, "seen live by dave on A"))["seq"]
        await old.wait_seq(room, k)
        await old.close()
        joined = await new.join(room, since=k)
        assert joined["last_seq"] == k
        sentinel = (await ra.say(room, "sentinel"))["seq"]
        await new.wait_seq(room, sentinel, timeout=TAIL_WAIT)
        await new.nothing_more(room)

        assert old.seqs(room) == [first, n, k]
        assert new.seqs(room) == [sentinel], (
            f"dave rejoined on B with since={k}: nothing at or below it may come again"
        )
        await rb.wait_seq(room, sentinel, timeout=TAIL_WAIT)
        assert rb.seqs(room) == [first, n, k, sentinel]
    finally:
        for r in [ra, rb, old] + ([new] if new is not None else []):
            await r.close()


async def test_the_last_message_lost_on_bs_pubsub_path_still_reaches_bs_client(
    site: Site,
) -> None:
    """B misses M live (proxy cut) and nothing is sent after M: B's client gets M anyway."""
    alice, bob = site.api.user(), site.api.user()
    room, (ra, rb) = await _start(site, alice, (site.a, alice, "alice@A"), (site.b, bob, "bob@B"))
    try:
        await ra.join(room)
        await rb.join(room)
        first = (await ra.say(room, "before the cut"))["seq"]
        await rb.wait_seq(room, first)

        await site.cut_b(room)
        m = (await ra.say(room, "the last word before the outage"))["seq"]
        await ra.wait_seq(room, m)
        await site.restore_b(room)
        await rb.wait_seq(room, m, timeout=TAIL_WAIT)  # no other message is sent
        await rb.nothing_more(room)
        assert rb.seqs(room) == [first, m]
    finally:
        for r in (ra, rb):
            await r.close()


async def test_the_last_message_sent_while_redis_is_down_reaches_the_other_node(
    site: Site,
) -> None:
    """Redis killed: A stores M and delivers it locally only; after Redis is back, B's client
    gets M with no later message to reveal the gap."""
    alice, bob = site.api.user(), site.api.user()
    room, (ra, rb) = await _start(site, alice, (site.a, alice, "alice@A"), (site.b, bob, "bob@B"))
    try:
        await ra.join(room)
        await rb.join(room)
        first = (await ra.say(room, "before the outage"))["seq"]
        await rb.wait_seq(room, first)

        site.redis.kill()
        await wait_ready(site.a, False)
        await wait_ready(site.b, False)
        m = (await ra.say(room, "sent while redis is down"))["seq"]
        await ra.wait_seq(room, m)  # A's own clients get it at once
        await asyncio.to_thread(site.redis.start)
        await wait_ready(site.a, True)
        await wait_ready(site.b, True)
        await rb.wait_seq(room, m, timeout=TAIL_WAIT)  # no other message is sent
        await rb.nothing_more(room)
        assert rb.seqs(room) == [first, m]
        assert ra.seqs(room) == [first, m]
    finally:
        for r in (ra, rb):
            await r.close()


# --- the soak ----------------------------------------------------------------------------------

SOAK_SECONDS = float(os.environ.get("CHAT_SOAK_SECONDS", "60"))
SOAK_CLIENTS = 12
SOAK_ROOMS = 4
SEND_EVERY = 1.5  # mean seconds between one client's messages
SETTLE_TIMEOUT = 30.0  # the quiet period's longest wait


@dataclass
class Got:
    seq: int
    id: int
    body: str
    conn: int  # which of the client's connections (1, 2, ...)
    replay: bool  # came in the join's replay (since+1..last_seq, before anything else)
    at: float  # seconds since the soak started


@dataclass
class SoakClient:
    """One simulated user: joins its rooms on a random node, sends, reconnects on its schedule."""

    index: int
    account: Account
    rooms: list[str]
    nodes: list[ServerProcess]
    rng: random.Random
    t0: float
    received: dict[str, list[Got]] = field(default_factory=lambda: defaultdict(list))
    high: dict[str, int] = field(default_factory=dict)  # highest seq received, per room
    unacked: dict[str, tuple[str, str]] = field(default_factory=dict)  # ref -> (room, body)
    acked: dict[str, tuple[str, int]] = field(default_factory=dict)  # ref -> (room, seq)
    joins: list[tuple[int, str, int, int, bool]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    ack_conflicts: list[str] = field(default_factory=list)
    conn: int = 0
    connects_failed: int = 0
    closes: Counter[int] = field(default_factory=Counter)
    sending: bool = True
    churning: bool = True
    running: bool = True
    _sent: int = 0
    # room -> [next seq the join's replay brings, its last_seq] while the replay runs
    _replaying: dict[str, list[int]] = field(default_factory=dict)
    _since: dict[str, int] = field(default_factory=dict)  # the since sent in this session
    _retry: list[tuple[float, str]] = field(default_factory=list)  # (when, ref) after an error

    @property
    def name(self) -> str:
        return f"c{self.index}"

    def caught_up(self, final: dict[str, int]) -> bool:
        return not self.unacked and all(self.high.get(r, 0) >= final[r] for r in self.rooms)

    async def run(self) -> None:
        while self.running:
            node = self.rng.choice(self.nodes)
            try:
                ws = await connect(node, self.account.token, open_timeout=5, close_timeout=2)
            except (OSError, TimeoutError, WebSocketException, AssertionError):
                self.connects_failed += 1
                await asyncio.sleep(self.rng.uniform(0.05, 0.3))
                continue
            try:
                await self._session(ws)
            except ConnectionClosed as exc:
                self.closes[exc.rcvd.code if exc.rcvd else 1006] += 1
            except (OSError, TimeoutError):
                self.closes[0] += 1
            except Exception as exc:  # a bug here: report it, keep the client going
                self.errors.append({"type": "client exception", "detail": repr(exc)})
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 3)

    async def _session(self, ws: ClientConnection) -> None:
        self.conn += 1
        self._replaying = {}
        loop = asyncio.get_running_loop()
        for room in self.rooms:
            since = self._since[room] = self.high.get(room, 0)
            await ws.send(
                json.dumps(
                    {
                        "type": "join",
                        "room": room,
                        "since": since,
                        "ref": f"join-{self.conn}-{room}",
                    }
                )
            )
        self._retry.clear()
        for ref, (room, body) in list(self.unacked.items()):  # the server dedupes by ref
            await self._send(ws, ref, room, body)
        session_end = loop.time() + self.rng.uniform(2.0, 12.0)
        next_send = loop.time() + self.rng.expovariate(1 / SEND_EVERY)
        while self.running:
            now = loop.time()
            if self.churning and now >= session_end:
                return  # reconnect on its own schedule
            if self._retry and now >= self._retry[0][0]:
                ref = self._retry.pop(0)[1]
                if ref in self.unacked:
                    await self._send(ws, ref, *self.unacked[ref])
                continue
            if self.sending and now >= next_send:
                self._sent += 1
                ref = f"{self.name}-{self._sent}"
                room = self.rng.choice(self.rooms)
                body = f"{ref} from {self.name}"
                self.unacked[ref] = (room, body)
                await self._send(ws, ref, room, body)
                next_send = now + self.rng.expovariate(1 / SEND_EVERY)
                continue
            wake = now + 0.25
            if self.churning:
                wake = min(wake, session_end)
            if self.sending:
                wake = min(wake, next_send)
            if self._retry:
                wake = min(wake, self._retry[0][0])
            try:
                raw = await asyncio.wait_for(ws.recv(), max(wake - now, 0.001))
            except TimeoutError:
                continue
            self._record(json.loads(raw), loop.time())

    async def _send(self, ws: ClientConnection, ref: str, room: str, body: str) -> None:
        await ws.send(json.dumps({"type": "send", "room": room, "body": body, "ref": ref}))

    def _record(self, frame: dict[str, Any], now: float) -> None:
        kind = frame["type"]
        if kind == "message":
            room, seq = frame["room"], frame["seq"]
            # The replay is since+1..last_seq in order, before any live message.
            window = self._replaying.get(room)
            replay = window is not None and seq == window[0]
            if replay:
                assert window is not None
                window[0] += 1
            if window is not None and (window[0] > window[1] or seq > window[1]):
                del self._replaying[room]
            got = Got(seq, frame["id"], frame["body"], self.conn, replay, now - self.t0)
            self.received[room].append(got)
            self.high[room] = max(self.high.get(room, 0), seq)
        elif kind == "joined":
            room = frame["room"]
            since = self._since.get(room, 0)
            self.joins.append(
                (self.conn, room, since, frame["last_seq"], frame["replay_truncated"])
            )
            if frame["last_seq"] > since:
                self._replaying[room] = [since + 1, frame["last_seq"]]
        elif kind == "ack":
            ref = frame["ref"]
            self.unacked.pop(ref, None)
            before = self.acked.get(ref)
            if before is not None and before != (frame["room"], frame["seq"]):
                self.ack_conflicts.append(f"{ref}: {before} then {frame['room']}:{frame['seq']}")
            self.acked[ref] = (frame["room"], frame["seq"])
        elif kind == "error":
            self.errors.append(frame)
            if frame.get("ref") in self.unacked:  # send it again shortly
                self._retry.append((now + 0.5, frame["ref"]))


@dataclass
class Faults:
    log: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.t0:6.1f}s {what}"
        self.log.append(line)
        print(line, flush=True)


async def _faults(site: Site, rng: random.Random, duration: float, faults: Faults) -> None:
    """SIGKILL one node, cut B's Redis link, restart Redis, SIGTERM the other node.

    Each at a seeded time and for a seeded while; after each, both nodes are
    ready again before the next.
    """
    victim = rng.choice(["a", "b"])
    other = "b" if victim == "a" else "a"
    node = {"a": site.a, "b": site.b}
    plan = [
        (duration * rng.uniform(0.12, 0.25), "kill", victim, rng.uniform(0.5, 3.0)),
        (duration * rng.uniform(0.30, 0.38), "cut", "b", rng.uniform(0.3, 2.0)),
        (duration * rng.uniform(0.45, 0.55), "redis", "", rng.uniform(0.5, 3.0)),
        (duration * rng.uniform(0.65, 0.80), "term", other, rng.uniform(0.5, 2.0)),
    ]
    faults.note("plan: " + ", ".join(f"{k} {n} at {t:.1f}s down {d:.1f}s" for t, k, n, d in plan))
    for at, kind, name, down in plan:
        await asyncio.sleep(max(0.0, faults.t0 + at - time.monotonic()))
        if kind == "cut":
            faults.note(f"proxy: cut B's Redis link ({site.proxy.cut()} connections)")
            await asyncio.sleep(down)
            site.proxy.restore()
            faults.note("proxy: restored")
        elif kind == "redis":
            faults.note("redis: SIGKILL")
            site.redis.kill()
            await asyncio.sleep(down)
            await asyncio.to_thread(site.redis.start)
            faults.note("redis: started again")
        else:
            server = node[name]
            sig = signal.SIGKILL if kind == "kill" else signal.SIGTERM
            faults.note(f"node {name}: {sig.name}")
            code = await asyncio.to_thread(server.stop, sig)
            faults.note(f"node {name}: exited with {code}")
            await asyncio.sleep(down)
            await asyncio.to_thread(server.start)
            faults.note(f"node {name}: started again")
        for server in site.nodes:
            await wait_ready(server, True, timeout=30)
        faults.note("both nodes ready")


def _check_client(
    c: SoakClient, history: dict[str, dict[int, dict[str, Any]]], final: dict[str, int]
) -> tuple[dict[str, int], list[str]]:
    """Counts of each kind of fault in what `c` received, and lines describing them."""
    counts: Counter[str] = Counter()
    lines: list[str] = []
    for room in c.rooms:
        got = c.received.get(room, [])
        seqs = [g.seq for g in got]
        expected = list(range(1, final[room] + 1))
        if seqs != expected:
            seen: dict[int, Got] = {}
            top = 0
            for g in got:
                if g.seq in seen:
                    first = seen[g.seq]
                    form = "same connection" if first.conn == g.conn else "after a reconnect"
                    how = f"{_how(first)}->{_how(g)}"
                    counts["duplicate"] += 1
                    counts[f"duplicate {form}"] += 1
                    lines.append(
                        f"{c.name} {room} seq {g.seq} twice ({form}, {how}; "
                        f"conn {first.conn}->{g.conn}; at {first.at:.1f}s "
                        f"and {g.at:.1f}s)"
                    )
                    continue
                if g.seq < top:
                    counts["out of order"] += 1
                    lines.append(f"{c.name} {room} seq {g.seq} after {top} ({_how(g)})")
                elif g.seq > top + 1:
                    counts["jump"] += 1
                    lines.append(
                        f"{c.name} {room} jumped {top} -> {g.seq} "
                        f"(conn {g.conn}, {_how(g)}, at {g.at:.1f}s)"
                    )
                seen[g.seq] = g
                top = max(top, g.seq)
            missing = sorted(set(expected) - set(seqs))
            if missing:
                counts["missing"] += len(missing)
                tail = [s for s in missing if s > max(seqs, default=0)]
                if tail:
                    counts["missing tail"] += len(tail)
                lines.append(
                    f"{c.name} {room} never got {len(missing)} seqs: {missing[:20]}"
                    f"{' (tail ' + str(tail) + ')' if tail else ''}"
                )
        for g in got:
            stored = history[room].get(g.seq)
            if stored is None or (stored["id"], stored["body"]) != (g.id, g.body):
                counts["body mismatch"] += 1
                lines.append(
                    f"{c.name} {room} seq {g.seq}: got {(g.id, g.body)}, "
                    f"stored {stored and (stored['id'], stored['body'])}"
                )
    for conn, room, _since, _last, truncated in c.joins:
        if truncated:
            counts["replay truncated"] += 1
            lines.append(f"{c.name} {room}: replay truncated on conn {conn}")
    for error in c.errors:
        counts["error frame"] += 1
        lines.append(f"{c.name}: error {error}")
    for conflict in c.ack_conflicts:
        counts["ack conflict"] += 1
        lines.append(f"{c.name}: ack conflict {conflict}")
    return dict(counts), lines


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS + 150)
async def test_soak_every_client_gets_every_seq_once_in_order(site: Site) -> None:
    seed = int(os.environ.get("CHAT_SOAK_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"\nsoak seed: CHAT_SOAK_SEED={seed} (CHAT_SOAK_SECONDS={SOAK_SECONDS:g})", flush=True)
    rng = random.Random(seed)
    owner = site.api.user()
    rooms = [site.api.room(owner) for _ in range(SOAK_ROOMS)]
    clients = []
    for i in range(SOAK_CLIENTS):
        client_rng = random.Random(rng.randrange(1 << 32))
        mine = sorted(client_rng.sample(rooms, client_rng.randint(2, 3)))
        clients.append(SoakClient(i, site.api.user(), mine, site.nodes, client_rng, 0.0))
    fault_rng = random.Random(rng.randrange(1 << 32))
    faults = Faults()
    for c in clients:
        c.t0 = faults.t0
    tasks = [asyncio.create_task(c.run(), name=c.name) for c in clients]
    try:
        await _faults(site, fault_rng, SOAK_SECONDS, faults)
        await asyncio.sleep(max(0.0, faults.t0 + SOAK_SECONDS - time.monotonic()))
        faults.note("quiet: no new messages, no scheduled reconnects")
        for c in clients:
            c.sending = False
            c.churning = False
        for server in site.nodes:
            await wait_ready(server, True, timeout=30)

        # Settle: every ref acked (resends included), then every client holds each
        # of its rooms' last seq as the database has it.
        settled = True
        try:
            await until(
                _noop,
                lambda _: all(not c.unacked for c in clients),
                SETTLE_TIMEOUT,
                "every ref acked",
            )
        except TimeoutError:
            settled = False
        final = {room: _last_seq(site.api, owner, room) for room in rooms}
        try:
            await until(
                _noop,
                lambda _: all(c.caught_up(final) for c in clients),
                SETTLE_TIMEOUT,
                "every client holding each room's last seq",
            )
        except TimeoutError:
            settled = False
        faults.note(f"settled: {settled}; last seqs {final}")
    finally:
        for c in clients:
            c.running = False
        await asyncio.wait(tasks, timeout=10)
        for t in tasks:
            t.cancel()

    history = {room: {m["seq"]: m for m in all_messages(site.api, owner, room)} for room in rooms}
    problems: Counter[str] = Counter()
    lines: list[str] = []
    for c in clients:
        counts, found = _check_client(c, history, final)
        problems.update(counts)
        lines.extend(found)
    # Every acked ref is stored exactly once, where its ack said.
    bodies: dict[str, Counter[str]] = {
        r: Counter(m["body"] for m in history[r].values()) for r in rooms
    }
    for c in clients:
        for ref, (room, seq) in c.acked.items():
            body = f"{ref} from {c.name}"
            stored = history[room].get(seq)
            if bodies[room][body] != 1 or stored is None or stored["body"] != body:
                problems["acked ref not stored once"] += 1
                lines.append(
                    f"{c.name} {ref}: ack said {room}:{seq}, stored {bodies[room][body]} times"
                )
        for ref in c.unacked:
            problems["never acked"] += 1
            lines.append(f"{c.name} {ref}: never acked")
    for room in rooms:
        assert sorted(history[room]) == list(range(1, final[room] + 1)), f"{room}: seqs gapless"
        stored_refs = sum(1 for c in clients for r, _ in c.acked.values() if r == room)
        if stored_refs != len(history[room]):
            problems["stored without an ack"] += len(history[room]) - stored_refs
    total = sum(len(g) for c in clients for g in c.received.values())
    summary = (
        f"seed {seed}: {len(clients)} clients, rooms {final}, {total} message frames, "
        f"{sum(c.conn for c in clients)} connections ({sum(c.connects_failed for c in clients)} "
        f"refused), closes {sum((c.closes for c in clients), Counter())}; "
        f"problems {dict(problems) or 'none'}"
    )
    print(summary)
    print("\n".join(faults.log))
    for line in lines[:200]:
        print(line)
    assert not problems, f"{summary}\nreplay with CHAT_SOAK_SEED={seed}\n" + "\n".join(lines[:40])


def _how(g: Got) -> str:
    return "replay" if g.replay else "live"


async def _noop() -> None:
    return None


def _last_seq(api: Api, account: Account, room: str) -> int:
    page = api.history(account, room, limit=1)  # the newest message
    return max((int(m["seq"]) for m in page), default=0)
