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
import json
import re
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
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
    messages: list[Frame] | None = None,
) -> list[tuple[float, Frame]]:
    """The next `count` `ack` / `error` frames with their arrival times, in arrival order.

    `message` frames seen meanwhile go to `messages` when given.
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
        elif frame["type"] == "message" and messages is not None:
            messages.append(frame)
    return got


async def burst(
    ws: ClientConnection, plan: Plan, timeout: float = 30.0, messages: list[Frame] | None = None
) -> tuple[list[float], list[tuple[float, Frame]]]:
    """Fire `plan` while reading its answers (so neither side ever waits on the other)."""
    got, sent = await asyncio.gather(answers(ws, len(plan), timeout, messages), fire(ws, plan))
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


# --- 1. a burst mixing rooms, users, connections, processes and repeated refs ----------


@pytest.fixture(scope="module")
def pair(
    module_servers: ServerFactory, databases: Databases
) -> tuple[ServerProcess, ServerProcess]:
    """Two processes on one database (no Redis: each delivers only its own messages)."""
    database = databases.new()
    return module_servers(database, **SETTINGS), module_servers(database, **SETTINGS)


@pytest.fixture(scope="module")
def api(pair: tuple[ServerProcess, ServerProcess]) -> Iterator[Api]:
    client = Api(pair[0])
    yield client
    client.close()


@dataclass
class Conn:
    name: str
    user: Account
    process: str  # "A" or "B"
    ws: ClientConnection
    plan: Plan = field(default_factory=list)


async def test_burst_mixing_rooms_users_and_repeated_refs_stores_each_ref_once(
    pair: tuple[ServerProcess, ServerProcess], api: Api
) -> None:
    a, b = pair
    alice, bob, carol, dave = api.user(), api.user(), api.user(), api.user()
    rooms = [api.room(alice) for _ in range(3)]
    # Before the burst: refs the burst repeats. Bob's "early-0" is his own, not Alice's.
    pre = await open_as(a, alice, rooms)
    early: dict[tuple[int, str], Frame] = {}
    early_body: dict[tuple[int, str], str] = {}
    for i, room in enumerate(rooms):
        early[(alice.id, f"early-{i}")] = await say(pre, room, f"alice early {i}", f"early-{i}")
        early_body[(alice.id, f"early-{i}")] = f"alice early {i}"
    pre_b = await open_as(a, bob, rooms[:1])
    early[(bob.id, "early-0")] = await say(pre_b, rooms[0], "bob early 0", "early-0")
    early_body[(bob.id, "early-0")] = "bob early 0"
    await pre.close()
    await pre_b.close()
    assert early[(bob.id, "early-0")]["id"] != early[(alice.id, "early-0")]["id"]

    observer = await open_as(a, dave, rooms)
    seen: list[Frame] = []
    conns = [
        Conn("a1", alice, "A", await open_as(a, alice, rooms)),
        Conn("a2", alice, "A", await open_as(a, alice, rooms)),
        Conn("a3", alice, "B", await open_as(b, alice, rooms)),
        Conn("b1", bob, "A", await open_as(a, bob, rooms)),
        Conn("c1", carol, "B", await open_as(b, carol, rooms)),
    ]
    for conn in conns:
        for i in range(40):
            room = rooms[i % 3]
            conn.plan.append((room, f"{conn.name}-{i}", f"{conn.name} says {i}"))
        # Alice's connections (two processes) race for the same refs, to any room.
        if conn.user is alice:
            for k in range(10):
                room = rooms[(k + len(conn.name)) % 3] if conn.name == "a2" else rooms[k % 3]
                conn.plan.insert(3 * k + 1, (room, f"shared-{k}", f"{conn.name} shared {k}"))
    a1, a2, a3, b1, c1 = conns
    # Repeats on one connection, inside the burst (another room and body: the first wins).
    a1.plan += [(rooms[2], "a1-0", "a1 repeat 0"), (rooms[0], "a1-5", "a1 repeat 5")]
    b1.plan.insert(20, (rooms[1], "b1-3", "b1 repeat 3"))
    # Repeats of refs stored before the burst, on both processes.
    a2.plan.insert(5, (rooms[1], "early-0", "a2 repeats early 0"))
    a3.plan.insert(7, (rooms[0], "early-2", "a3 repeats early 2"))
    b1.plan.insert(9, (rooms[2], "early-0", "b1 repeats early 0"))
    # The same ref strings from other users are theirs: stored separately.
    c1.plan += [(rooms[0], "shared-0", "carol shared 0"), (rooms[1], "early-1", "carol early 1")]
    b1.plan.append((rooms[2], "shared-1", "bob shared 1"))

    before = batch_sizes(a)
    results = await asyncio.gather(*(burst(c.ws, c.plan) for c in conns))
    got = {conn.name: [frame for _, frame in results[i][1]] for i, conn in enumerate(conns)}

    # Every send is acknowledged, on each connection in the order it was sent.
    for conn in conns:
        refused = [f for f in got[conn.name] if f["type"] != "ack"]
        assert not refused, f"{conn.name}: {refused[:3]}"
        assert [f["ref"] for f in got[conn.name]] == [ref for _, ref, _ in conn.plan]
    # The writer did batch: some transaction on A stored more than one message.
    ones, count = batch_sizes(a)
    assert count - before[1] > ones - before[0], "every batch on A held one message"

    # One ack per (user, ref): repeats get exactly the first one, early ones included.
    acks: dict[tuple[int, str], list[Frame]] = defaultdict(list)
    bodies: dict[tuple[int, str], list[str]] = defaultdict(list)
    where: dict[tuple[int, str], set[str]] = defaultdict(set)
    for key, ack in early.items():
        acks[key].append(ack)
        bodies[key].append(early_body[key])
        where[key].add("early")
    for conn in conns:
        for (_, ref, body), ack in zip(conn.plan, got[conn.name], strict=True):
            key = (conn.user.id, ref)
            acks[key].append(ack)
            bodies[key].append(body)
            where[key].add(conn.name)
    for key, frames in acks.items():
        assert all(f == frames[0] for f in frames), f"{key} answered differently: {frames}"

    # History: each (user, ref) stored exactly once, as its ack says, seqs 1..n per room.
    history = {room: all_messages(api, alice, room) for room in rooms}
    by_id = {m["id"]: m for room in rooms for m in history[room]}
    assert len(by_id) == sum(len(h) for h in history.values()) == len(acks)
    for room in rooms:
        gapless(history[room])
        assert last_seqs(api, alice)[room] == len(history[room])
    stored_by_key: dict[tuple[int, str], Frame] = {}
    for key, frames in acks.items():
        ack = frames[0]
        message = by_id.get(ack["id"])
        assert message is not None, f"{key} acked as {ack} but not in history"
        assert (message["room"], message["seq"], message["ts"]) == (
            ack["room"],
            ack["seq"],
            ack["ts"],
        )
        assert message["user"]["id"] == key[0]
        assert message["body"] in bodies[key], (key, message["body"], bodies[key])
        if len(where[key]) == 1:  # sent on one connection only: the first send is stored
            assert message["body"] == bodies[key][0], (key, message["body"])
        stored_by_key[key] = message
    assert {m["id"] for m in stored_by_key.values()} == set(by_id)

    # The observer on A got each room's messages once, in seq order, as stored; at
    # least every message only A's clients sent (B's are not delivered to A: no Redis).
    deadline = now() + 5
    only_a = {
        m["id"]
        for key, m in stored_by_key.items()
        if all(
            w == "early" or next(c for c in conns if c.name == w).process == "A" for w in where[key]
        )
    }
    while not only_a <= {m["id"] for m in seen} and now() < deadline:
        try:
            frame = await recv(observer, deadline - now())
        except TimeoutError:
            break
        if frame["type"] == "message":
            seen.append(frame)
    # The early messages went out before the observer joined.
    early_ids = {ack["id"] for ack in early.values()}
    missing = only_a - early_ids - {m["id"] for m in seen}
    assert not missing, f"the observer on A missed {len(missing)} messages stored by A"
    for room in rooms:
        got_seqs = [m["seq"] for m in seen if m["room"] == room]
        assert got_seqs == sorted(set(got_seqs)), f"{room}: repeated or out of order {got_seqs}"
    for m in seen:
        assert m == by_id[m["id"]]
    for ws in [observer, *(c.ws for c in conns)]:
        await ws.close()
