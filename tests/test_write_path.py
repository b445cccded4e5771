"""The write path (group commit) through real sockets and a real database.

A `send` is stored by its process's writer in a batch with whatever else is
pending, one transaction per batch; `ack` follows the commit, then `message` to
every member. Checked here, on SQLite by default and on PostgreSQL with
`CHAT_TEST_DATABASE_URL`, with what clients see and what history
(`GET /api/rooms/{room}/messages`) shows:

- a burst mixing rooms, users, connections, two processes and repeated refs:
  each (user, ref) stored once, repeats answered with the first ack, seqs gapless;
- many sends in flight on one connection (past `max_inflight_sends`): acks in order;
- a failing batch (a trigger refuses inserts into `messages`): every send answered
  `unavailable`, nothing stored, no seq used; resent refs land once afterwards;
- a full writer queue: `overloaded` at once, acked == stored, pings still answered;
- a socket dropped without a close frame frees its user's connection slot and
  leaves presence at once, with or without sends in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import Databases, ServerFactory
from tests.harness import (
    Account,
    Api,
    ServerProcess,
    all_messages,
    connect,
    join,
    recv,
    recv_until,
    say,
)

# No rate limit in the way: these tests fire hundreds of sends per second.
SETTINGS: dict[str, Any] = {"send_rate": 1_000_000, "send_burst": 1_000_000}

Frame = dict[str, Any]
Plan = list[tuple[str, str, str]]  # (room, ref, body) per send, in order


def now() -> float:
    return asyncio.get_running_loop().time()


async def fire(ws: ClientConnection, plan: Plan) -> list[float]:
    """Send every frame of `plan` without waiting for answers; when each went out."""
    sent: list[float] = []
    for room, ref, body in plan:
        await ws.send(json.dumps({"type": "send", "room": room, "body": body, "ref": ref}))
        sent.append(now())
    return sent


async def answers(
    ws: ClientConnection,
    count: int,
    timeout: float = 30.0,
    first: asyncio.Event | None = None,
) -> list[tuple[float, Frame]]:
    """The next `count` `ack` / `error` frames with their arrival times, in arrival order.

    Other frames are skipped; `first` is set when the first answer arrives.
    """
    deadline = now() + timeout
    got: list[tuple[float, Frame]] = []
    while len(got) < count:
        remaining = deadline - now()
        if remaining <= 0:
            raise AssertionError(f"only {len(got)} of {count} answers in {timeout}s: {got[-3:]}")
        try:
            frame = await recv(ws, remaining)
        except TimeoutError:
            raise AssertionError(
                f"only {len(got)} of {count} answers in {timeout}s: {got[-3:]}"
            ) from None
        if frame["type"] in ("ack", "error"):
            got.append((now(), frame))
            if first is not None:
                first.set()
    return got


async def burst(
    ws: ClientConnection, plan: Plan, timeout: float = 30.0, first: asyncio.Event | None = None
) -> tuple[list[float], list[tuple[float, Frame]]]:
    """Fire `plan` while reading its answers (so neither side ever waits on the other)."""
    got, sent = await asyncio.gather(answers(ws, len(plan), timeout, first), fire(ws, plan))
    return sent, got


def last_seqs(api: Api, account: Account) -> dict[str, int]:
    r = api.client.get("/api/rooms", headers=account.headers)
    r.raise_for_status()
    return {room["name"]: room["last_seq"] for room in r.json()["items"]}


def gapless(messages: Sequence[Frame]) -> None:
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(1, len(messages) + 1)), f"seqs are not 1..{len(seqs)}: {seqs}"


def batch_sizes(server: ServerProcess) -> tuple[float, float]:
    """(batches of one message, all batches) from the writer's histogram in /metrics."""
    text = httpx.get(f"{server.http}/metrics", timeout=5).text
    ones = re.search(r'^chat_write_batch_size_bucket\{le="1\.0"\} (\S+)$', text, re.M)
    count = re.search(r"^chat_write_batch_size_count (\S+)$", text, re.M)
    assert ones and count, "no chat_write_batch_size histogram in /metrics"
    return float(ones.group(1)), float(count.group(1))


async def open_as(
    server: ServerProcess, account: Account, rooms: Sequence[str]
) -> ClientConnection:
    ws = await connect(server, account.token)
    for room in rooms:
        await join(ws, room)
    return ws


Key = tuple[int, str]  # (user id, ref)


@dataclass
class Sent:
    """One `send` frame and the server's answer to it."""

    conn: str
    user: int
    room: str
    ref: str
    body: str
    answer: Frame
    sent_at: float
    answered_at: float

    @property
    def key(self) -> Key:
        return (self.user, self.ref)

    @property
    def acked(self) -> bool:
        return self.answer["type"] == "ack"


@dataclass
class Client:
    """A connection with a plan of sends; `run` fires them all and matches the answers."""

    name: str
    user: Account
    ws: ClientConnection
    plan: Plan = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # refs of the answers, as they arrived

    async def run(self, timeout: float = 30.0, first: asyncio.Event | None = None) -> list[Sent]:
        plan, self.plan = self.plan, []
        sent_at, got = await burst(self.ws, plan, timeout, first)
        self.order = [frame["ref"] for _, frame in got]
        waiting: dict[str, list[int]] = defaultdict(list)  # ref -> plan indexes, in order
        for i, (_, ref, _) in enumerate(plan):
            waiting[ref].append(i)
        out: list[Sent | None] = [None] * len(plan)
        for at, frame in got:
            assert waiting.get(frame["ref"]), f"{self.name}: an answer to no send: {frame}"
            i = waiting[frame["ref"]].pop(0)
            room, ref, body = plan[i]
            out[i] = Sent(self.name, self.user.id, room, ref, body, frame, sent_at[i], at)
        return [s for s in out if s is not None]


def check_history(
    api: Api, reader: Account, rooms: Sequence[str], sends: Sequence[Sent]
) -> dict[Key, Frame]:
    """What was acked is exactly what is stored: one message per acked (user, ref).

    Every ack of a (user, ref) is the same; history holds one message per acked
    pair, as its ack describes, and nothing else; each room's seqs are 1..n and
    its `last_seq` is n (a refused send used no seq). A pair sent on a single
    connection stores the body of its first acked send. `sends` are in the
    order each connection sent them. Returns the stored message per pair.
    """
    every: dict[Key, list[Sent]] = defaultdict(list)
    for s in sends:
        every[s.key].append(s)
    acks = {key: [s for s in group if s.acked] for key, group in every.items()}
    acks = {key: group for key, group in acks.items() if group}
    for key, group in acks.items():
        first = group[0].answer
        assert all(s.answer == first for s in group), f"{key} acked differently: {group}"
    history = {room: all_messages(api, reader, room) for room in rooms}
    newest = last_seqs(api, reader)
    for room in rooms:
        gapless(history[room])
        assert newest[room] == len(history[room]), f"{room}: last_seq {newest[room]}"
    by_id = {m["id"]: m for h in history.values() for m in h}
    assert len(by_id) == sum(len(h) for h in history.values())
    acked_ids = {group[0].answer["id"] for group in acks.values()}
    assert len(acked_ids) == len(acks), "two (user, ref) pairs acked with one message id"
    unacked = sorted(set(by_id) - acked_ids)
    assert not unacked, f"stored but never acked: {[by_id[i] for i in unacked][:5]}"
    lost = sorted(acked_ids - set(by_id))
    assert not lost, f"acked but not stored: {lost[:5]}"
    stored: dict[Key, Frame] = {}
    for key, group in acks.items():
        ack, message = group[0].answer, by_id[group[0].answer["id"]]
        assert (message["room"], message["seq"], message["ts"], message["user"]["id"]) == (
            ack["room"],
            ack["seq"],
            ack["ts"],
            key[0],
        ), (key, ack, message)
        assert message["body"] in {s.body for s in every[key]}, (key, message)
        if len({s.conn for s in every[key]}) == 1:
            assert message["body"] == group[0].body, (key, message, group[0])
        stored[key] = message
    return stored


def refused_codes(sends: Sequence[Sent]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for s in sends:
        if not s.acked:
            counts[s.answer.get("code", "?")] += 1
    return dict(counts)


# --- 1. a burst mixing rooms, users, connections and repeated refs ----------------------


@pytest.fixture(scope="module")
def pair(
    module_processes: ServerFactory, databases: Databases
) -> tuple[ServerProcess, ServerProcess]:
    """Two processes on one database (no Redis: each delivers only its own messages)."""
    database = databases.new()
    return module_processes(database, **SETTINGS), module_processes(database, **SETTINGS)


@pytest.fixture(scope="module")
def api(pair: tuple[ServerProcess, ServerProcess]) -> Iterator[Api]:
    client = Api(pair[0])
    yield client
    client.close()


async def test_burst_mixing_rooms_users_and_repeated_refs_stores_each_ref_once(
    pair: tuple[ServerProcess, ServerProcess], api: Api
) -> None:
    a, b = pair
    alice, bob, carol, dave = api.user(), api.user(), api.user(), api.user()
    rooms = [api.room(alice) for _ in range(3)]
    # Before the burst: refs the burst repeats. Bob's "early-0" is his own, not Alice's.
    early: list[Sent] = []
    for account, count in ((alice, 3), (bob, 1)):
        ws = await open_as(a, account, rooms)
        for i in range(count):
            body = f"{account.name} early {i}"
            ack = await say(ws, rooms[i], body, f"early-{i}")
            early.append(Sent("early", account.id, rooms[i], f"early-{i}", body, ack, 0, 0))
        await ws.close()

    observer = await open_as(a, dave, rooms)
    a1, a2, a3, b1, c1 = clients = [
        Client("a1", alice, await open_as(a, alice, rooms)),
        Client("a2", alice, await open_as(a, alice, rooms)),
        Client("a3", alice, await open_as(b, alice, rooms)),  # the other process
        Client("b1", bob, await open_as(a, bob, rooms)),
        Client("c1", carol, await open_as(b, carol, rooms)),
    ]
    for c in clients:
        c.plan = [(rooms[i % 3], f"{c.name}-{i}", f"{c.name} says {i}") for i in range(40)]
    # Alice's two connections on A race for the same refs, to different rooms.
    for k in range(10):
        a1.plan.insert(3 * k + 1, (rooms[k % 3], f"shared-{k}", f"a1 shared {k}"))
        a2.plan.insert(3 * k + 2, (rooms[(k + 1) % 3], f"shared-{k}", f"a2 shared {k}"))
    # Repeats on one connection inside the burst, to another room with another body.
    a1.plan += [(rooms[2], "a1-0", "a1 repeats 0"), (rooms[0], "a1-5", "a1 repeats 5")]
    b1.plan.insert(20, (rooms[1], "b1-3", "b1 repeats 3"))
    c1.plan.insert(30, (rooms[0], "c1-29", "c1 repeats 29 at once"))
    # Repeats of refs stored before the burst, on both processes.
    a2.plan.insert(5, (rooms[1], "early-0", "a2 repeats early 0"))
    a3.plan.insert(7, (rooms[0], "early-2", "a3 repeats early 2"))
    b1.plan.insert(9, (rooms[2], "early-0", "b1 repeats early 0"))
    # The same ref strings from other users are theirs: stored separately.
    c1.plan += [(rooms[0], "shared-0", "carol shared 0"), (rooms[1], "early-1", "carol early 1")]
    b1.plan.append((rooms[2], "shared-1", "bob shared 1"))
    plans = {c.name: [ref for _, ref, _ in c.plan] for c in clients}

    before = batch_sizes(a)
    results = await asyncio.gather(*(c.run() for c in clients))
    sends = early + [s for result in results for s in result]

    # Every send is acknowledged, on each connection in the order it was sent.
    assert not refused_codes(sends), [s.answer for s in sends if not s.acked][:5]
    for c in clients:
        assert c.order == plans[c.name], f"{c.name}: acks out of order"
    # The writer did batch: some transaction on A stored more than one message.
    ones, count = batch_sizes(a)
    assert count - before[1] > ones - before[0], "every batch on A held a single message"
    stored = check_history(api, alice, rooms, sends)
    assert len(stored) == len({s.key for s in sends}) == 3 + 1 + 5 * 40 + 10 + 2 + 1

    # The observer on A got every message A stored, once each, in seq order, as stored
    # (what B stores is not delivered on A: no Redis here).
    by_id = {m["id"]: m for m in stored.values()}
    sent_on: dict[Key, set[str]] = defaultdict(set)
    for s in sends:
        sent_on[s.key].add(s.conn)
    on_a = {stored[key]["id"] for key, conns in sent_on.items() if conns <= {"a1", "a2", "b1"}}
    seen: list[Frame] = []
    deadline = now() + 10
    while not on_a <= {m["id"] for m in seen}:
        seen.append(await recv_until(observer, "message", timeout=deadline - now()))
    for room in rooms:
        seqs = [m["seq"] for m in seen if m["room"] == room]
        assert seqs == sorted(set(seqs)), f"{room}: repeated or out of order: {seqs}"
    assert all(m == by_id[m["id"]] for m in seen)
    for ws in [observer, *(c.ws for c in clients)]:
        await ws.close()


async def test_same_ref_racing_on_two_processes_is_stored_once_and_bystanders_are_acked(
    pair: tuple[ServerProcess, ServerProcess], api: Api
) -> None:
    """Alice sends the same refs through both processes at once; Carol and Bob only their own.

    On SQLite the processes' write transactions serialize (`BEGIN IMMEDIATE`), so
    the later one finds the ref. On PostgreSQL the two inserts race: the loser's
    batch hits the unique constraint and is retried, once; hitting it again (the
    other process's next batch holds more of the same refs) must not fail the
    batch, and never the sends of users who raced nobody.
    """
    a, b = pair
    alice, bob, carol = api.user(), api.user(), api.user()
    rooms = [api.room(alice) for _ in range(2)]
    clients = [
        Client("alice@A", alice, await open_as(a, alice, rooms)),
        Client("alice@B", alice, await open_as(b, alice, rooms)),
        Client("bob@A", bob, await open_as(a, bob, rooms)),
        Client("carol@B", carol, await open_as(b, carol, rooms)),
    ]
    for c in clients:
        # Each process writes to a room of its own: their transactions do not queue
        # for a room's row lock, only (on PostgreSQL) for a ref both insert.
        room = rooms[0] if c.name.endswith("@A") else rooms[1]
        if c.user is alice:  # the same refs through both processes, in different orders
            order = list(range(200))
            if c.name == "alice@B":
                random.Random(7).shuffle(order)
            c.plan = [(room, f"race-{i}", f"{c.name} race {i}") for i in order]
        else:
            c.plan = [(room, f"{c.name}-{i}", f"{c.name} says {i}") for i in range(100)]
    results = await asyncio.gather(*(c.run() for c in clients))
    sends = [s for result in results for s in result]
    refused = [s for s in sends if not s.acked]
    for s in refused:
        assert s.answer["code"] == "unavailable", s.answer
        assert s.answer["ref"] == s.ref and s.answer["retry_after"] > 0, s.answer
    # A refused send may be resent with its ref: whatever happened, each pair lands once.
    by_name = {c.name: c for c in clients}
    retry = refused
    for _ in range(5):
        if not retry:
            break
        for s in retry:
            by_name[s.conn].plan.append((s.room, s.ref, s.body))
        again = await asyncio.gather(*(c.run() for c in clients if c.plan))
        retry = [s for result in again for s in result if not s.acked]
        sends += [s for result in again for s in result]
    assert not retry, f"still refused after 5 resends: {retry[:3]}"
    stored = check_history(api, alice, rooms, sends)
    assert len(stored) == 200 + 2 * 100
    # Nothing was wrong with the database: no send should have been refused at all,
    # least of all those of users who raced nobody.
    bystanders = [s for s in refused if s.user != alice.id]
    assert not refused, (
        f"{len(refused)} sends refused 'unavailable' with a healthy database, "
        f"{len(bystanders)} of them by Bob and Carol, who raced nobody: {refused[0].answer}"
    )
    for c in clients:
        await c.ws.close()


# --- 2. many sends in flight on one connection -----------------------------------------


async def test_sends_past_the_inflight_bound_are_acked_in_order(
    pair: tuple[ServerProcess, ServerProcess], api: Api
) -> None:
    a, _ = pair
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    listener = await open_as(a, bob, [room])
    sender = Client("a", alice, await open_as(a, alice, [room]))
    # 300 sends without waiting: far past max_inflight_sends (64), so the server
    # stops reading this connection until acks come back.
    sender.plan = [(room, f"r{i}", f"message {i}") for i in range(300)]
    sends = await sender.run()
    assert not refused_codes(sends), [s.answer for s in sends if not s.acked][:3]
    assert sender.order == [f"r{i}" for i in range(300)], "acks out of order"
    assert [s.answer["seq"] for s in sends] == list(range(1, 301))
    stored = check_history(api, alice, [room], sends)
    assert [stored[(alice.id, f"r{i}")]["body"] for i in range(300)] == [
        f"message {i}" for i in range(300)
    ]
    # Every member got them all, once, in order.
    got = [await recv_until(listener, "message", timeout=10) for _ in range(300)]
    assert [m["seq"] for m in got] == list(range(1, 301))
    await sender.ws.close()
    await listener.close()


# --- 3. a failing batch ------------------------------------------------------------------

TRIGGER = "test_refuse_messages"


def _sqlite_path(database_url: str) -> str:
    return database_url.split(":///", 1)[1].split("?", 1)[0]


def _pg_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://")


def _sqlite_exec(path: str, statement: str) -> None:
    conn = sqlite3.connect(path, timeout=20, isolation_level=None)
    try:
        conn.execute(statement)
    finally:
        conn.close()


async def refuse_inserts(database_url: str, refuse: bool) -> None:
    """Make every insert into `messages` fail (a trigger), or stop that. A real database
    error, raised inside the server's own transaction, on SQLite and PostgreSQL."""
    if database_url.startswith("sqlite"):
        path = _sqlite_path(database_url)
        statement = (
            f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON messages "
            "BEGIN SELECT RAISE(ABORT, 'test says no'); END"
            if refuse
            else f"DROP TRIGGER {TRIGGER}"
        )
        await asyncio.to_thread(_sqlite_exec, path, statement)
        return
    import asyncpg

    conn = await asyncpg.connect(_pg_dsn(database_url))
    try:
        if refuse:
            await conn.execute(
                f"CREATE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'test says no'; END $$"
            )
            await conn.execute(
                f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON messages "
                f"FOR EACH ROW EXECUTE FUNCTION {TRIGGER}()"
            )
        else:
            await conn.execute(f"DROP TRIGGER {TRIGGER} ON messages")
            await conn.execute(f"DROP FUNCTION {TRIGGER}()")
    finally:
        await conn.close()


async def test_failing_batch_answers_unavailable_stores_nothing_and_resent_refs_land_once(
    make_server: ServerFactory,
) -> None:
    server = make_server(**SETTINGS)
    api = Api(server)
    alice, bob, carol = api.user(), api.user(), api.user()
    rooms = [api.room(alice) for _ in range(2)]
    observer = await open_as(server, carol, rooms)
    a = Client("a", alice, await open_as(server, alice, rooms))
    b = Client("b", bob, await open_as(server, bob, rooms))
    a.plan = [(rooms[i % 2], f"ok-{i}", f"alice ok {i}") for i in range(4)]
    sends = await a.run()
    assert all(s.acked for s in sends)

    # Mid-run: the database starts refusing once the first of 2 x 200 sends is acked.
    for c in (a, b):
        c.plan = [(rooms[i % 2], f"mid-{i}", f"{c.name} mid {i}") for i in range(200)]
    failing = False
    first = asyncio.Event()
    try:
        runs = asyncio.gather(a.run(first=first), b.run())
        await asyncio.wait_for(first.wait(), 10)
        await refuse_inserts(server.database_url, True)
        failing = True
        mid = [s for result in await runs for s in result]
        # While it refuses: every send is answered `unavailable`, with its ref.
        for c in (a, b):
            c.plan = [(rooms[i % 2], f"down-{i}", f"{c.name} down {i}") for i in range(30)]
        down = [s for result in await asyncio.gather(a.run(), b.run()) for s in result]
    finally:
        if failing:
            await refuse_inserts(server.database_url, False)
    print(f"\nmid-run: {sum(s.acked for s in mid)} of {len(mid)} acked before the failure")
    for s in down:
        assert not s.acked and s.answer["code"] == "unavailable", s.answer
        assert s.answer["ref"] == s.ref and s.answer["retry_after"] > 0, s.answer
    for s in mid:
        assert s.acked or s.answer["code"] == "unavailable", s.answer
        assert s.answer["ref"] == s.ref, s.answer
        if not s.acked:
            assert s.answer["retry_after"] > 0, s.answer
    for c in (a, b):  # once refused, every later batch failed as well
        outcomes = [s.acked for s in mid if s.conn == c.name]
        assert outcomes == sorted(outcomes, reverse=True), f"{c.name}: {outcomes}"
    sends += mid + down
    # Nothing refused is stored and no seq was used: history is exactly what was acked.
    check_history(api, alice, rooms, sends)
    acked_ids = {s.answer["id"] for s in sends if s.acked}
    delivered = []
    while {m["id"] for m in delivered} != acked_ids:
        delivered.append(await recv_until(observer, "message", timeout=5))
        assert delivered[-1]["id"] in acked_ids, f"a refused send was delivered: {delivered[-1]}"

    # Restored: resending the refused refs (and some acked ones, some twice, on new
    # connections) stores each once, with seqs going on from where they were.
    a2 = Client("a2", alice, await open_as(server, alice, rooms))
    b2 = Client("b2", bob, await open_as(server, bob, rooms))
    redo = {"a": a2, "b": b2}
    for s in [*mid, *down, *mid[:10], *down[::3]]:
        redo[s.conn].plan.append((s.room, s.ref, s.body))
    again = [s for result in await asyncio.gather(a2.run(), b2.run()) for s in result]
    assert not refused_codes(again), [s.answer for s in again if not s.acked][:3]
    for s in again:  # the acked refs get their first ack back
        first = next((x for x in sends if x.key == s.key and x.acked), None)
        if first is not None:
            assert s.answer == first.answer
    stored = check_history(api, alice, rooms, [*sends, *again])
    assert len(stored) == 4 + 2 * 200 + 2 * 30
    for ws in (observer, a.ws, b.ws, a2.ws, b2.ws):
        await ws.close()
    api.close()


# --- 4. a full writer queue ----------------------------------------------------------------


async def test_full_writer_queue_refuses_at_once_and_pings_are_still_answered(
    make_server: ServerFactory,
) -> None:
    server = make_server(**SETTINGS, write_queue_max=1, write_batch_max=1)
    api = Api(server)
    owner = api.user()
    room = api.room(owner)
    clients = []
    for i in range(4):
        user = api.user()
        c = Client(f"c{i}", user, await open_as(server, user, [room]))
        c.plan = [(room, f"c{i}-{j}", f"c{i} says {j}") for j in range(60)]
        clients.append(c)
    pinger = await connect(server, api.user().token)

    async def pings() -> list[float]:
        waits = []
        for i in range(5):
            started = now()
            await pinger.send(json.dumps({"type": "ping", "ref": f"p{i}"}))
            await recv_until(pinger, "pong", timeout=5, ref=f"p{i}")
            waits.append(now() - started)
        return waits

    *results, waits = await asyncio.gather(*(c.run() for c in clients), pings())
    sends = [s for result in results for s in result]
    codes = refused_codes(sends)
    assert set(codes) <= {"overloaded"}, codes
    overloaded = [s for s in sends if not s.acked]
    print(f"\n{len(overloaded)} of {len(sends)} refused; pongs after {waits}")
    assert overloaded and len(overloaded) < len(sends), codes
    slow = [s.answered_at - s.sent_at for s in overloaded if s.answered_at - s.sent_at > 1.0]
    assert not slow, f"{len(slow)} refusals took over 1 s: {max(slow):.2f}s"
    for s in overloaded:
        assert s.answer["ref"] == s.ref and s.answer["retry_after"] > 0, s.answer
    assert max(waits) < 1.0, f"pongs took {waits}"
    check_history(api, owner, [room], sends)
    # A refused ref sent again, once the queue has room, is stored once.
    by_name = {c.name: c for c in clients}
    for s in overloaded[:5]:
        ack = await say(by_name[s.conn].ws, s.room, s.body, s.ref)
        sends.append(Sent(s.conn, s.user, s.room, s.ref, s.body, ack, 0, 0))
    check_history(api, owner, [room], sends)
    for ws in [pinger, *(c.ws for c in clients)]:
        await ws.close()
    api.close()


# --- 5. sockets that drop without a close frame ----------------------------------------------


@pytest.fixture(scope="module")
def solo(module_servers: ServerFactory) -> Iterator[tuple[ServerProcess, Api]]:
    server = module_servers(**SETTINGS, max_connections_per_user=1, presence_grace=0.2)
    client = Api(server)
    yield server, client
    client.close()


async def reconnect(server: ServerProcess, account: Account, within: float) -> ClientConnection:
    """Connect until the server lets the user in (it closes 4009 while the user's
    only connection slot is taken); fail after `within` seconds."""
    deadline = now() + within
    refusals: list[int | None] = []
    while True:
        try:
            return await connect(server, account.token)
        except ConnectionClosed as exc:
            refusals.append(exc.rcvd.code if exc.rcvd else None)
        assert now() < deadline, f"not let in within {within}s: closed {refusals}"
        await asyncio.sleep(0.05)  # within the handshake rate limit (20/s)


async def test_dropped_socket_frees_the_connection_slot_and_leaves_presence(
    solo: tuple[ServerProcess, Api],
) -> None:
    server, api = solo
    alice, bob = api.user(), api.user()
    room = api.room(bob)
    watcher = await open_as(server, bob, [room])
    first = await open_as(server, alice, [room])
    await recv_until(watcher, "presence", event="join")
    # The slot is taken: a second socket is refused.
    with pytest.raises(ConnectionClosed) as refused:
        await connect(server, alice.token)
    assert refused.value.rcvd is not None and refused.value.rcvd.code == 4009
    first.transport.abort()  # no close frame: the TCP connection is just reset
    dropped = now()
    second = await reconnect(server, alice, within=1.0)
    print(f"\nlet in again after {now() - dropped:.3f}s")
    leave = await recv_until(watcher, "presence", timeout=3, event="leave")
    left_after = now() - dropped
    assert leave["user"]["id"] == alice.id and leave["room"] == room
    assert 0.18 <= left_after <= 1.5, f"leave announced {left_after:.2f}s after the drop"
    await second.close()
    await watcher.close()


async def test_dropped_socket_with_sends_in_flight_keeps_what_was_acked(
    solo: tuple[ServerProcess, Api],
) -> None:
    server, api = solo
    alice, bob = api.user(), api.user()
    room = api.room(bob)
    watcher = await open_as(server, bob, [room])
    ws = await open_as(server, alice, [room])
    plan = [(room, f"r{i}", f"message {i}") for i in range(300)]
    got, _ = await asyncio.gather(answers(ws, 30), fire(ws, plan))
    ws.transport.abort()  # 30 acks in hand, up to 270 sends in flight
    dropped = now()
    acked = [frame for _, frame in got]
    assert all(f["type"] == "ack" for f in acked), acked
    # The slot comes free, and the server goes on storing and delivering.
    again = Client("a", alice, await reconnect(server, alice, within=2.0))
    print(f"\nlet in again after {now() - dropped:.3f}s")
    await join(again.ws, room)
    history = all_messages(api, bob, room)
    by_id = {m["id"]: m for m in history}
    for ack in acked:  # every ack received before the drop is stored, as acked
        m = by_id.get(ack["id"])
        assert m is not None and (m["seq"], m["body"]) == (ack["seq"], f"message {ack['ref'][1:]}")
    # Resending everything: what was stored is answered with its ack, the rest lands once.
    again.plan = plan
    sends = await again.run()
    assert not refused_codes(sends)
    for ack in acked:
        assert sends[int(ack["ref"][1:])].answer == ack
    stored = check_history(api, bob, [room], sends)
    assert len(stored) == 300
    got_seqs = [(await recv_until(watcher, "message", timeout=10))["seq"] for _ in range(300)]
    assert got_seqs == list(range(1, 301)), "the watcher missed or repeated messages"
    await again.ws.close()
    await watcher.close()


# --- 6. a stalled database: acks stop coming -------------------------------------------


@contextlib.asynccontextmanager
async def writes_stalled(database_url: str) -> AsyncIterator[None]:
    """Hold up every write to `messages` while inside; reads go on.

    SQLite: the test holds the database's write lock (`BEGIN IMMEDIATE`; the server
    waits up to its 30 s busy timeout). PostgreSQL: a SHARE lock on `messages`.
    """
    if database_url.startswith("sqlite"):
        lock = sqlite3.connect(
            _sqlite_path(database_url), timeout=20, isolation_level=None, check_same_thread=False
        )
        try:
            await asyncio.to_thread(lock.execute, "BEGIN IMMEDIATE")
            try:
                yield
            finally:
                await asyncio.to_thread(lock.execute, "ROLLBACK")
        finally:
            lock.close()
        return
    import asyncpg

    conn = await asyncpg.connect(_pg_dsn(database_url))
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE messages IN SHARE MODE")
            yield
    finally:
        await conn.close()


async def test_a_send_past_the_inflight_bound_is_refused_after_two_seconds_without_acks(
    make_server: ServerFactory,
) -> None:
    server = make_server(**SETTINGS, max_inflight_sends=8)
    api = Api(server)
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    ws = await open_as(server, alice, [room])
    other = await open_as(server, bob, [room])
    plan = [(room, f"r{i}", f"message {i}") for i in range(9)]
    async with writes_stalled(server.database_url):
        started = now()
        await fire(ws, plan)
        # 8 in flight, none acked: the 9th waits 2 s for room, then is refused.
        [(at, refused)] = await answers(ws, 1, timeout=10)
        assert refused["type"] == "error" and refused["code"] == "overloaded", refused
        assert refused["ref"] == "r8" and refused["retry_after"] > 0, refused
        assert 1.8 <= at - started <= 3.5, f"refused after {at - started:.2f}s"
        # The process is not stuck: another connection is answered at once.
        pinged = now()
        await other.send(json.dumps({"type": "ping", "ref": "p"}))
        await recv_until(other, "pong", timeout=5, ref="p")
        assert now() - pinged < 1.0
    # Unstalled: the 8 in flight are stored and acked in order; the refused one was not.
    acks = [frame for _, frame in await answers(ws, 8, timeout=30)]
    assert [(f["type"], f["ref"], f["seq"]) for f in acks] == [
        ("ack", f"r{i}", i + 1) for i in range(8)
    ]
    assert [m["body"] for m in all_messages(api, alice, room)] == [body for _, _, body in plan[:8]]
    retried = await say(ws, room, "message 8", "r8")
    assert retried["seq"] == 9
    await ws.close()
    await other.close()
    api.close()


async def test_a_dropped_socket_frees_its_slot_at_once_even_while_its_sends_wait(
    make_server: ServerFactory,
) -> None:
    """The session of a socket that is gone must not hold the user's only slot (or
    their presence) while it waits, 2 s per send frame already read, for acks."""
    server = make_server(**SETTINGS, max_inflight_sends=8, max_connections_per_user=1)
    api = Api(server)
    alice = api.user()
    room = api.room(alice)
    ws = await open_as(server, alice, [room])
    plan = [(room, f"r{i}", f"message {i}") for i in range(10)]
    async with writes_stalled(server.database_url):
        await fire(ws, plan)
        # 8 in flight; the 9th is refused after 2 s, and the 10th starts its wait.
        [(_, refused)] = await answers(ws, 1, timeout=10)
        assert refused["code"] == "overloaded", refused
        ws.transport.abort()
        dropped = now()
        again = await reconnect(server, alice, within=15)
        took = now() - dropped
    print(f"\nlet in again {took:.2f}s after the drop")
    assert took <= 1.0, f"the dropped socket held the user's only slot for {took:.2f}s"
    # What the dropped socket had in flight is stored once; resending gets its acks.
    client = Client("again", alice, again)
    await join(again, room)
    client.plan = plan
    sends = await client.run()
    assert not refused_codes(sends)
    assert [s.answer["seq"] for s in sends[:8]] == list(range(1, 9))
    check_history(api, alice, [room], sends)
    await again.close()
    api.close()
