"""Heartbeats: jittered pings; dead peers leave presence in bounded time; no flicker."""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.harness import Api, ServerProcess, connect, expect_no_frame, join, recv_until
from tests.rawws import PING, PONG, RawClient, open_frozen

INTERVAL, TIMEOUT, GRACE = 1.0, 1.0, 1.0
SLACK = 1.5  # scheduling noise on a busy machine


@pytest.fixture(scope="module")
def hb(module_servers: ServerFactory) -> ServerProcess:
    return module_servers(
        heartbeat_interval=INTERVAL, heartbeat_timeout=TIMEOUT, presence_grace=GRACE
    )


@pytest.fixture(scope="module")
def hb_api(hb: ServerProcess) -> Iterator[Api]:
    client = Api(hb)
    yield client
    client.close()


async def _presence(ws: Any, event: str, name: str, timeout: float) -> dict[str, Any]:
    """The next `presence` frame for user `name` with this event, within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await recv_until(ws, "presence", max(deadline - time.monotonic(), 0.001))
        if frame["event"] == event and frame["user"]["name"] == name:
            return frame


async def test_server_pings_are_jittered_and_answering_keeps_the_connection(
    hb: ServerProcess, hb_api: Api
) -> None:
    alice = hb_api.user()
    raw = await RawClient.connect(hb.port, {"Authorization": f"Bearer {alice.token}"})
    assert raw.status == 101
    seen: list[float] = []
    deadline = time.monotonic() + 5.5 * INTERVAL
    while time.monotonic() < deadline:
        opcode, payload = await raw.read_frame(timeout=3 * INTERVAL)
        if opcode == PING:
            seen.append(time.monotonic())
            await raw.send(PONG, payload)
    await raw.send_json({"type": "ping", "ref": "still-here"})
    pong = await raw.read_json()
    assert pong["type"] == "pong", "answering pings keeps the connection open"
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert len(gaps) >= 3, seen
    # Each ping waits a random 75-100 % of the interval (plus scheduling noise).
    assert all(0.7 * INTERVAL <= g <= INTERVAL + 0.35 for g in gaps), gaps
    assert statistics.pstdev(gaps) > 0.01, f"pings are not jittered: {gaps}"
    await raw.close()


@pytest.mark.parametrize("how", ["raw socket never read", "client transport paused"])
async def test_frozen_client_leaves_presence_within_interval_timeout_and_grace(
    hb: ServerProcess, hb_api: Api, how: str
) -> None:
    watcher, frozen = hb_api.user(), hb_api.user()
    room = hb_api.room(watcher)
    w = await connect(hb, watcher.token)
    await join(w, room)
    if how == "raw socket never read":
        sock = open_frozen(hb.port, frozen.token, [{"type": "join", "room": room}])
        await _presence(w, "join", frozen.name, 5)
        stop = sock.close
    else:
        ws = await connect(hb, frozen.token, ping_interval=None)
        await join(ws, room)
        await _presence(w, "join", frozen.name, 5)
        ws.transport.pause_reading()  # alive TCP, nothing read, no pong ever sent

        def stop() -> None:
            ws.transport.abort()

    frozen_at = time.monotonic()
    try:
        await _presence(w, "leave", frozen.name, INTERVAL + TIMEOUT + GRACE + SLACK)
        elapsed = time.monotonic() - frozen_at
        # A ping goes out within the interval, is unanswered for the timeout, and
        # the leave follows after the grace period: never sooner than timeout + grace.
        assert TIMEOUT + GRACE - 0.2 <= elapsed <= INTERVAL + TIMEOUT + GRACE + SLACK, elapsed
    finally:
        stop()
    # The watcher's own connection, which answers pings, is still fine.
    await w.send(json.dumps({"type": "ping", "ref": "p"}))
    assert (await recv_until(w, "pong"))["ref"] == "p"
    await w.close()


async def test_quick_reconnect_does_not_flicker(hb: ServerProcess, hb_api: Api) -> None:
    watcher, mover = hb_api.user(), hb_api.user()
    room = hb_api.room(watcher)
    w = await connect(hb, watcher.token)
    await join(w, room)
    m = await connect(hb, mover.token)
    await join(m, room)
    await _presence(w, "join", mover.name, 5)
    await m.close()
    m = await connect(hb, mover.token)  # back well within the grace period
    joined = await join(m, room)
    assert watcher.name in [u["name"] for u in joined["presence"]]
    await expect_no_frame(w, GRACE + 0.7, kind="presence")
    await m.close()
    left = await _presence(w, "leave", mover.name, GRACE + SLACK)
    assert left["room"] == room
    await w.close()


async def test_unanswered_ping_closes_with_4002_for_a_client_that_reads_late(
    hb: ServerProcess, hb_api: Api
) -> None:
    alice = hb_api.user()
    raw = await RawClient.connect(hb.port, {"Authorization": f"Bearer {alice.token}"})
    hello = await raw.read_json()
    assert hello["type"] == "hello"
    # Read frames but never answer pings: the server gives up after interval + timeout.
    started = time.monotonic()
    code = None
    try:
        while time.monotonic() - started < INTERVAL + TIMEOUT + SLACK + 2:
            opcode, payload = await raw.read_frame(timeout=INTERVAL + TIMEOUT + SLACK)
            if opcode == 0x8:
                code = int.from_bytes(payload[:2], "big")
                break
    except EOFError:
        pass
    assert code == 4002, code
    assert time.monotonic() - started <= INTERVAL + TIMEOUT + SLACK
    await raw.close()
