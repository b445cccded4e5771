"""Slow consumers: a client that stops reading is closed (4008) without slowing the room.

What the slow client did receive is a gapless prefix of the room, and `join`
with `since` after reconnecting returns exactly the rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory
from tests.harness import (
    Api,
    ServerProcess,
    connect,
    join,
    open_with_small_buffer,
    recv,
    recv_until,
    say,
)

# Big bodies fill socket buffers quickly (incompressible, should compression be on).
BODY_CHARS = 30_000
QUEUE = 50  # the outbound buffer holds about this many messages


def body() -> str:
    return os.urandom(BODY_CHARS // 2).hex()


def metric(api: Api, name: str) -> float:
    for line in api.client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Watcher:
    """Receives a room's messages in the background and records when each arrived."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.arrived: dict[int, float] = {}
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for raw in self.ws:
            frame: dict[str, Any] = json.loads(raw)
            if frame["type"] == "message":
                self.arrived[frame["seq"]] = time.monotonic()

    async def wait_for(self, seq: int, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while seq not in self.arrived:
            assert time.monotonic() < deadline, f"seq {seq} never arrived"
            await asyncio.sleep(0.005)
        return self.arrived[seq]


async def timed_send(
    ws: ClientConnection, watcher: Watcher, room: str, body: str
) -> tuple[int, float]:
    """Send one message; (its seq, seconds from send until the watcher had it)."""
    started = time.monotonic()
    ack = await say(ws, room, body)
    arrived = await watcher.wait_for(ack["seq"])
    return ack["seq"], arrived - started


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> ServerProcess:
    return module_servers(
        outbound_buffer_bytes=QUEUE * BODY_CHARS, send_rate=10_000, send_burst=10_000
    )


async def test_stalled_reader_is_closed_and_resumes_without_gaps(
    server: ServerProcess, api: Api
) -> None:
    sender, watcher_user, slow_user = api.user(), api.user(), api.user()
    room = api.room(sender)
    s = await connect(server, sender.token, max_size=None)
    await join(s, room)
    w = await connect(server, watcher_user.token, max_size=None)
    await join(w, room)
    watcher = Watcher(w)

    baseline = [(await timed_send(s, watcher, room, body()))[1] for _ in range(30)]

    slow = await open_with_small_buffer(server, slow_user.token)
    joined = await join(slow, room)
    first_seq = joined["last_seq"] + 1
    slow.transport.pause_reading()  # from now on the slow client reads nothing
    closed_before = metric(api, "chat_slow_consumers_total")

    stalled: list[float] = []
    last_seq = 0
    for i in range(1000):
        last_seq, latency = await timed_send(s, watcher, room, body())
        if i % 5 == 0 and metric(api, "chat_slow_consumers_total") > closed_before:
            break
        stalled.append(latency)
    else:
        raise AssertionError("the stalled client was never closed")
    # The room kept its pace while one member was stuck (and after it was dropped).
    after = [(await timed_send(s, watcher, room, body()))[1] for _ in range(10)]
    last_seq = max(watcher.arrived)

    # The slow client wakes up: it gets a gapless prefix, then the 4008 close.
    slow.transport.resume_reading()
    got: list[int] = []
    try:
        while True:
            frame = await recv(slow, timeout=10)
            if frame["type"] == "message":
                got.append(frame["seq"])
    except ConnectionClosed:
        pass
    assert slow.close_code == 4008, slow.close_code
    assert got, "the slow client received nothing at all"
    assert got == list(range(first_seq, first_seq + len(got))), "not a gapless prefix"
    assert got[-1] < last_seq

    # Reconnect and resume: join with `since` returns exactly the rest, in order.
    again = await connect(server, slow_user.token, max_size=None)
    rejoined = await join(again, room, since=got[-1])
    rest: list[int] = []
    while len(rest) < rejoined["last_seq"] - got[-1]:
        frame = await recv_until(again, "message")
        rest.append(frame["seq"])
    assert got + rest == list(range(first_seq, rejoined["last_seq"] + 1))

    p50 = statistics.median
    p95 = lambda xs: sorted(xs)[int(0.95 * (len(xs) - 1))]  # noqa: E731
    print(
        f"\nlatency of the room (send->watcher) baseline p50 {p50(baseline) * 1000:.1f} ms "
        f"p95 {p95(baseline) * 1000:.1f} ms; while a member was stuck ({len(stalled)} msgs) "
        f"p50 {p50(stalled) * 1000:.1f} ms p95 {p95(stalled) * 1000:.1f} ms; "
        f"after p50 {p50(after) * 1000:.1f} ms; slow client got {len(got)} before 4008"
    )
    assert p50(stalled) <= 2 * p50(baseline) + 0.05, (baseline, stalled)
    assert p95(stalled) <= 3 * p95(baseline) + 0.1, (baseline, stalled)
    for ws in (s, w, again):
        await ws.close()
    watcher.task.cancel()


async def test_a_replay_longer_than_the_queue_waits_for_the_socket(
    server: ServerProcess, api: Api
) -> None:
    """A join's replay is this client's own request: it must not trip the slow-consumer close."""
    alice = api.user()
    room = api.room(alice)
    a = await connect(server, alice.token, max_size=None)
    await join(a, room)
    for i in range(3 * QUEUE):  # three times what the outbound buffer holds
        await a.send(json.dumps({"type": "send", "room": room, "body": body(), "ref": f"r{i}"}))
    await recv_until(a, "ack", ref=f"r{3 * QUEUE - 1}")
    b = await connect(server, alice.token, max_size=None)
    joined = await join(b, room, since=0)
    assert joined["last_seq"] == 3 * QUEUE
    seqs = [(await recv_until(b, "message"))["seq"] for _ in range(3 * QUEUE)]
    assert seqs == list(range(1, 3 * QUEUE + 1))
    await a.close()
    await b.close()
