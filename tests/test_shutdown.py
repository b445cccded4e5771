"""Graceful shutdown of a real process: SIGTERM mid-burst loses no acknowledged message,
clients are told 1001, new sockets are refused while draining, and the exit is bounded."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ServerFactory
from tests.harness import (
    Api,
    all_messages,
    connect,
    join,
    one_node,
    open_with_small_buffer,
    recv,
    recv_until,
)

SHUTDOWN_GRACE = 5.0  # chat.drain.SHUTDOWN_GRACE: uvicorn's own wait after our drain


class Burst:
    """One connection sending as fast as it can, collecting acks, until the server closes it."""

    def __init__(self, ws: ClientConnection, room: str, tag: str) -> None:
        self.ws = ws
        self.room = room
        self.tag = tag
        self.sent: list[str] = []
        self.acks: dict[str, int] = {}
        self.acked_at: dict[str, float] = {}
        self.close_code: int | None = None
        self.tasks = [asyncio.create_task(self._write()), asyncio.create_task(self._read())]

    async def _write(self) -> None:
        try:
            for i in range(100_000):
                ref = f"{self.tag}-{i}"
                frame = {"type": "send", "room": self.room, "body": f"{self.tag} {i}", "ref": ref}
                await self.ws.send(json.dumps(frame))
                self.sent.append(ref)
                if len(self.sent) - len(self.acks) > 20:  # keep a few in flight
                    await asyncio.sleep(0.005)
        except ConnectionClosed:
            pass

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame["type"] == "ack":
                    self.acks[frame["ref"]] = frame["seq"]
                    self.acked_at[frame["ref"]] = time.monotonic()
        except ConnectionClosed:
            pass
        self.close_code = self.ws.close_code

    async def done(self) -> None:
        await asyncio.wait_for(asyncio.gather(*self.tasks), 30)


async def test_sigterm_mid_burst_keeps_every_acknowledged_message(
    make_server: ServerFactory,
) -> None:
    # The drain is per process: signal one node (its pair, if any, keeps serving).
    server = one_node(make_server(send_rate=100_000, send_burst=100_000, drain_timeout=10))
    api = Api(server)
    users = [api.user() for _ in range(3)]
    room = api.room(users[0])
    bursts = []
    for n, user in enumerate(users):
        ws = await connect(server, user.token)
        await join(ws, room)
        bursts.append(Burst(ws, room, f"u{n}"))
    while sum(len(b.acks) for b in bursts) < 150:
        await asyncio.sleep(0.01)

    assert server.proc is not None
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for b in bursts:
        await b.done()
    exit_code = await asyncio.to_thread(server.proc.wait, 30)
    took = time.monotonic() - signalled
    acked_after = sum(1 for b in bursts for t in b.acked_at.values() if t > signalled)
    acks = {ref: seq for b in bursts for ref, seq in b.acks.items()}
    print(
        f"\nSIGTERM mid-burst: {sum(len(b.sent) for b in bursts)} sent, {len(acks)} acked "
        f"({acked_after} of them after the signal), close codes "
        f"{[b.close_code for b in bursts]}, exit {exit_code} after {took:.2f}s"
    )
    assert [b.close_code for b in bursts] == [1001] * len(bursts)
    assert took < 10 + SHUTDOWN_GRACE

    # Every acknowledged message is in the database, with the seq its ack said.
    server.start()
    stored = all_messages(api, users[0], room)
    by_body = {m["body"]: m["seq"] for m in stored}
    for ref, seq in acks.items():
        tag, i = ref.split("-")
        assert by_body.get(f"{tag} {i}") == seq, ref
    assert [m["seq"] for m in stored] == list(range(1, len(stored) + 1))

    # Resending everything (same refs) stores each message exactly once.
    for n, (user, b) in enumerate(zip(users, bursts, strict=True)):
        ws = await connect(server, user.token)
        await join(ws, room)
        for ref in b.sent:
            tag, i = ref.split("-")
            frame = {"type": "send", "room": room, "body": f"{tag} {i}", "ref": ref}
            await ws.send(json.dumps(frame))
        got = {}
        while len(got) < len(b.sent):
            ack = await recv_until(ws, "ack", timeout=15)
            got[ack["ref"]] = ack["seq"]
        assert all(got[ref] == seq for ref, seq in b.acks.items()), f"user {n}: an ack changed"
        await ws.close()
    stored = all_messages(api, users[0], room)
    assert len(stored) == sum(len(b.sent) for b in bursts)
    assert len({m["body"] for m in stored}) == len(stored)
    api.close()


async def test_drain_refuses_new_sockets_and_is_bounded_by_a_stuck_client(
    make_server: ServerFactory,
) -> None:
    drain = 3.0
    # The drain is per process: signal one node (its pair, if any, keeps serving).
    server = one_node(
        make_server(
            drain_timeout=drain, outbound_buffer_bytes=64 << 20, send_rate=10_000, send_burst=10_000
        )
    )
    api = Api(server)
    alice, stuck_user, calm_user = api.user(), api.user(), api.user()
    room = api.room(alice)
    a = await connect(server, alice.token, max_size=None)
    await join(a, room)
    calm = await connect(server, calm_user.token, max_size=None)
    # A member that stopped reading with frames still queued for it holds the drain.
    stuck = await open_with_small_buffer(server, stuck_user.token)
    await join(stuck, room)
    stuck.transport.pause_reading()
    for i in range(200):  # ~6 MB of incompressible text: more than the socket buffers hold
        body = os.urandom(15_000).hex()
        await a.send(json.dumps({"type": "send", "room": room, "body": body, "ref": f"r{i}"}))
    await recv_until(a, "ack", timeout=30, ref="r199")

    assert server.proc is not None
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    # While draining: no new sockets (503, try again), not ready, still alive.
    with pytest.raises(InvalidStatus) as refused:
        await connect(server, calm_user.token)
    assert refused.value.response.status_code == 503
    assert refused.value.response.headers["Retry-After"] == "1"
    async with httpx.AsyncClient(base_url=server.http) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["draining"] is True
        assert (await client.get("/healthz")).status_code == 200
    # The responsive client was told the server is going away.
    with pytest.raises(ConnectionClosed):
        while True:
            await recv(calm, 5)
    assert calm.close_code == 1001
    exit_code = await asyncio.to_thread(server.proc.wait, 30)
    took = time.monotonic() - signalled
    print(
        f"\ndrain with a stuck client: exit {exit_code} after {took:.2f}s (drain_timeout {drain})"
    )
    assert drain - 0.5 <= took <= drain + 2  # uvicorn does not wait for it again
    stuck.transport.abort()  # closes its socket too
    api.close()
