"""Several server processes sharing one database and one Redis (`CHAT_REDIS_URL`).

Every test runs two real `chat serve` processes, A and B. The shared Redis is
isolated per module by a unique key and channel prefix (`CHAT_REDIS_PREFIX`);
the failure test runs a private `redis-server` it can kill. The ordering test
runs on SQLite (WAL, two processes on one file) and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import (
    PG_URL,
    Databases,
    ServerFactory,
    _pg_admin,
    fresh_pg_database,
)
from tests.harness import (
    Account,
    Api,
    ServerProcess,
    connect,
    expect_no_frame,
    join,
    recv,
    recv_until,
    say,
)
from tests.redis_support import PrivateRedis, shared_redis_url, unique_prefix

pytestmark = pytest.mark.redis

# Users get small send buckets (to see that a user's limit is shared by both servers),
# bots big ones (to flood); presence entries live 1.5 s so a killed server's users
# leave quickly.
SITE = {
    "send_rate": 0.05,
    "send_burst": 4,
    "bot_send_rate": 10_000,
    "bot_send_burst": 10_000,
    "presence_grace": 0.5,
    "presence_ttl": 1.5,
}


Site = tuple[ServerProcess, ServerProcess, str, str]  # A, B, database, prefix


@pytest.fixture(scope="module")
def site(module_processes: ServerFactory, databases: Databases) -> Site:
    """Servers A and B on one database (the session's default kind) and one Redis."""
    url, prefix = shared_redis_url(), unique_prefix()
    database = databases.new()
    a = module_processes(database, redis_url=url, redis_prefix=prefix, **SITE)
    b = module_processes(database, redis_url=url, redis_prefix=prefix, **SITE)
    return a, b, database, prefix


@pytest.fixture(scope="module")
def pair(site: Site) -> tuple[ServerProcess, ServerProcess]:
    return site[0], site[1]


@pytest.fixture(scope="module")
def api(pair: tuple[ServerProcess, ...]) -> Iterator[Api]:
    client = Api(pair[0])
    yield client
    client.close()


@pytest.fixture(scope="module")
def admin(api: Api) -> Account:
    return api.admin()


async def _collect(ws: ClientConnection, count: int, timeout: float) -> list[dict[str, Any]]:
    """The next `count` message frames (other frames skipped)."""
    got: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(got) < count:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError(f"got {len(got)} of {count} messages")
        frame = await recv(ws, remaining)
        if frame["type"] == "message":
            got.append(frame)
    return got


async def _flood(
    ws: ClientConnection, room: str, who: str, count: int, seen: list[dict[str, Any]]
) -> list[int]:
    """Send `count` messages without waiting; the seqs of their acks (messages go to `seen`)."""
    refs = [f"{who}-{i}" for i in range(count)]
    for i, ref in enumerate(refs):
        await ws.send(json.dumps({"type": "send", "room": room, "body": f"{who} {i}", "ref": ref}))
    seqs: dict[str, int] = {}
    while len(seqs) < count:
        frame = await recv(ws, 20)
        if frame["type"] == "ack":
            seqs[frame["ref"]] = frame["seq"]
        elif frame["type"] == "message":
            seen.append(frame)
        assert frame["type"] != "error", frame
    return [seqs[r] for r in refs]


async def _ordering_run(
    a: ServerProcess, b: ServerProcess, api: Api, admin: Account, per_sender: int
) -> None:
    # Few accounts (each costs an argon2 hash), many connections: two bots with a
    # connection on each server, and one reader with two connections on each.
    one, two, reader = api.bot(admin), api.bot(admin), api.user()
    room = api.room(admin)
    reader_ws = [await connect(s, reader.token) for s in (a, a, b, b)]
    sender_ws = [await connect(s, u.token) for s, u in ((a, one), (b, one), (a, two), (b, two))]
    for ws in reader_ws + sender_ws:
        await join(ws, room)
    total = per_sender * len(sender_ws)
    collecting = [asyncio.create_task(_collect(ws, total, 60)) for ws in reader_ws]
    seen: list[list[dict[str, Any]]] = [[] for _ in sender_ws]
    acks = await asyncio.gather(
        *(_flood(ws, room, f"s{i}", per_sender, seen[i]) for i, ws in enumerate(sender_ws))
    )
    for seqs in acks:  # one sender's messages are stored in the order it sent them
        assert seqs == sorted(seqs)
    assert sorted(s for seqs in acks for s in seqs) == list(range(1, total + 1))
    received = await asyncio.gather(*collecting)
    first = [(m["seq"], m["id"], m["body"]) for m in received[0]]
    assert [seq for seq, _, _ in first] == list(range(1, total + 1)), "gapless, in seq order"
    for other in received[1:]:
        assert [(m["seq"], m["id"], m["body"]) for m in other] == first
    # Each sender's own connection saw the same sequence too.
    for ws, early in zip(sender_ws, seen, strict=True):
        rest = await _collect(ws, total - len(early), 10)
        assert [(m["seq"], m["id"], m["body"]) for m in early + rest] == first
    for ws in reader_ws + sender_ws:
        await ws.close()


async def test_a_message_sent_on_a_reaches_a_client_on_b(
    pair: tuple[ServerProcess, ...], api: Api
) -> None:
    a, b = pair
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    wa, wb = await connect(a, alice.token), await connect(b, bob.token)
    await join(wa, room)
    await join(wb, room)
    ack = await say(wa, room, "across processes")
    msg = await recv_until(wb, "message")
    assert (msg["seq"], msg["body"], msg["user"]["name"]) == (
        ack["seq"],
        "across processes",
        alice.name,
    )
    back = await say(wb, room, "and back")
    assert (await recv_until(wa, "message", seq=back["seq"]))["body"] == "and back"
    await wa.close()
    await wb.close()


async def test_concurrent_senders_on_both_servers_keep_one_gapless_order(
    pair: tuple[ServerProcess, ...], api: Api, admin: Account
) -> None:
    await _ordering_run(pair[0], pair[1], api, admin, per_sender=60)


@pytest.mark.postgres
async def test_concurrent_senders_keep_one_order_on_postgresql(
    make_process: ServerFactory, databases: Databases
) -> None:
    database = fresh_pg_database()
    url, prefix = shared_redis_url(), unique_prefix()
    a = make_process(database, redis_url=url, redis_prefix=prefix, **SITE)
    b = make_process(database, redis_url=url, redis_prefix=prefix, **SITE)
    api = Api(a)
    try:
        await _ordering_run(a, b, api, api.admin(), per_sender=60)
    finally:
        api.close()
        _pg_admin(PG_URL, f'DROP DATABASE IF EXISTS "{database.rpartition("/")[2]}" WITH (FORCE)')


async def test_typing_and_presence_cross_processes(
    pair: tuple[ServerProcess, ...], api: Api
) -> None:
    a, b = pair
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    wa = await connect(a, alice.token)
    await join(wa, room)
    wb = await connect(b, bob.token)
    joined = await join(wb, room)
    assert {u["name"] for u in joined["presence"]} == {alice.name, bob.name}
    event = await recv_until(wa, "presence", event="join")
    assert event["user"]["name"] == bob.name
    await wb.send(json.dumps({"type": "typing", "room": room}))
    assert (await recv_until(wa, "typing"))["user"]["name"] == bob.name
    await wb.close()
    event = await recv_until(wa, "presence", event="leave")
    assert event["user"]["name"] == bob.name
    await wa.close()


async def _closed_with(ws: ClientConnection, code: int, timeout: float = 5.0) -> None:
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == code


async def test_logout_on_a_closes_sockets_on_b(pair: tuple[ServerProcess, ...], api: Api) -> None:
    a, b = pair
    alice = api.user()
    on_b = [await connect(b, alice.token) for _ in range(2)]
    on_a = await connect(a, alice.token)
    r = httpx.post(f"{a.http}/api/auth/logout", headers=alice.headers)
    assert r.status_code == 204
    for ws in [*on_b, on_a]:
        await _closed_with(ws, 4003)


async def test_ban_on_a_closes_sockets_on_b(
    pair: tuple[ServerProcess, ...], api: Api, admin: Account
) -> None:
    a, b = pair
    mallory = api.user()
    ws = await connect(b, mallory.token)
    r = httpx.post(f"{a.http}/api/admin/users/{mallory.name}/ban", headers=admin.headers)
    assert r.status_code == 204
    await _closed_with(ws, 4003)


async def test_a_users_send_limit_is_shared_by_every_server(
    pair: tuple[ServerProcess, ...], api: Api
) -> None:
    a, b = pair
    alice = api.user()
    room = api.room(alice)
    wa, wb = await connect(a, alice.token), await connect(b, alice.token)
    await join(wa, room)
    await join(wb, room)
    for ws in (wa, wb, wa, wb):  # the burst (4) spent half on each server
        await say(ws, room, "within the burst")
    await wb.send(json.dumps({"type": "send", "room": room, "body": "one too many", "ref": "x"}))
    refused = await recv_until(wb, "error", ref="x")
    assert refused["code"] == "rate_limited" and refused["retry_after"] > 0
    await wa.close()
    await wb.close()


async def test_admin_presence_lists_users_of_every_server(
    pair: tuple[ServerProcess, ...], api: Api, admin: Account
) -> None:
    a, b = pair
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    wa, wb = await connect(a, alice.token), await connect(b, bob.token)
    await join(wa, room)
    await join(wb, room)
    for server in pair:
        r = httpx.get(f"{server.http}/api/admin/presence", headers=admin.headers)
        rooms = {x["room"]: {u["name"] for u in x["users"]} for x in r.json()["rooms"]}
        assert rooms[room] == {alice.name, bob.name}
    await wa.close()
    await wb.close()


async def test_users_of_a_killed_server_leave_after_their_entries_expire(
    site: Site, module_processes: ServerFactory, api: Api
) -> None:
    a, _, database, prefix = site
    c = module_processes(database, redis_url=shared_redis_url(), redis_prefix=prefix, **SITE)
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    wa, wc = await connect(a, alice.token), await connect(c, bob.token)
    await join(wa, room)
    await join(wc, room)
    await recv_until(wa, "presence", event="join")
    c.stop(signal.SIGKILL)  # no goodbye: its presence entries just stop being refreshed
    left = await recv_until(wa, "presence", event="leave", timeout=SITE["presence_ttl"] + 3)
    assert left["user"]["name"] == bob.name
    await wa.close()


def test_readyz_reports_the_broker(pair: tuple[ServerProcess, ...]) -> None:
    for server in pair:
        r = httpx.get(f"{server.http}/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["checks"]["broker"] == "ok"


async def _wait_ready(server: ServerProcess, ready: bool, timeout: float = 15.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout), httpx.AsyncClient() as client:
        while True:
            r = await client.get(f"{server.http}/readyz")
            if (r.status_code == 200) == ready:
                body: dict[str, Any] = r.json()
                return body
            await asyncio.sleep(0.1)


async def test_delivery_resumes_after_redis_restarts(
    make_process: ServerFactory, databases: Databases, tmp_path: Path
) -> None:
    redis = PrivateRedis(tmp_path).start()
    try:
        database = databases.new()
        a = make_process(database, redis_url=redis.url, **SITE)
        b = make_process(database, redis_url=redis.url, **SITE)
        api = Api(a)
        alice, bob = api.user(), api.user()
        room = api.room(alice)
        api.close()
        wa, wb = await connect(a, alice.token), await connect(b, bob.token)
        await join(wa, room)
        await join(wb, room)
        first = await say(wa, room, "before")
        assert (await recv_until(wb, "message"))["seq"] == first["seq"]

        redis.kill()
        body = await _wait_ready(a, ready=False)
        assert body["checks"]["broker"].startswith("unavailable")
        # Stored and acked while Redis is down; A's own clients still get it live.
        during = await say(wa, room, "during")
        assert (await recv_until(wa, "message", seq=during["seq"]))["body"] == "during"
        await expect_no_frame(wb, 0.3, kind="message")

        redis.start()
        await _wait_ready(a, ready=True)
        await _wait_ready(b, ready=True)
        # B missed "during" live and reads it back from the database once it has
        # resubscribed: B's client gets it without asking, before anything newer.
        missed = await recv_until(wb, "message", timeout=10)
        assert (missed["seq"], missed["body"]) == (during["seq"], "during")
        after = await say(wa, room, "after")
        live = await recv_until(wb, "message", timeout=10)
        assert (live["seq"], live["body"]) == (after["seq"], "after")
        # Reconnecting with `since` replays both, once.
        await wb.close()
        wb = await connect(b, bob.token)
        joined = await join(wb, room, since=first["seq"])
        assert joined["last_seq"] == after["seq"]
        replay = [await recv_until(wb, "message") for _ in range(2)]
        assert [m["body"] for m in replay] == ["during", "after"]
        await expect_no_frame(wb, 0.3, kind="message")
        await wa.close()
        await wb.close()
    finally:
        redis.kill()
