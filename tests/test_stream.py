"""The event stream (`GET /api/stream`): the same frames as a socket, a cursor in `id:`
that resumes with nothing lost or doubled across a restart and across processes,
notifications, keep-alives, tickets, revocation and refusals."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from chat_client import MessageFrame, StreamClient
from chat_client.errors import RevokedError
from tests.conftest import Servers
from tests.harness import Account, Api, Server, connect, join, metric, nodes, recv_until
from tests.sse import Event, SseReader, last_id, open_stream

CHANGES = ("edited", "deleted", "reaction")


def post(api: Api, who: Account, room: str, body: str, base: str | None = None) -> dict[str, Any]:
    """A REST send; its ack."""
    url = f"{base or ''}/api/rooms/{room}/messages"
    r = api.client.post(url, json={"body": body, "ref": uuid.uuid4().hex}, headers=who.headers)
    assert r.status_code == 201, r.text
    ack: dict[str, Any] = r.json()
    return ack


async def change(server: Server, who: Account, room: str, **frame: Any) -> dict[str, Any]:
    """An edit or a reaction over a socket; its own copy (the confirmation)."""
    ws = await connect(server, who.token)
    await join(ws, room)
    ref = uuid.uuid4().hex
    await ws.send(json.dumps({"room": room, "ref": ref, **frame}))
    kind = "edited" if frame["type"] == "edit" else "reaction"
    mine = await recv_until(ws, kind, ref=ref)
    await ws.close()
    return mine


async def opening(reader: SseReader, rooms: list[str]) -> list[Event]:
    """`hello`, then per room `joined` ... `changes_checked`: the stream is live."""
    events = [await reader.until("hello")]
    for room in rooms:
        events.append(await reader.until("joined", room=room))
        events.append(await reader.until("changes_checked", room=room))
    return events


def tally(events: list[Event]) -> tuple[dict[str, list[int]], Counter[tuple[str, int]], list[int]]:
    """Message seqs per room (in order), change versions counted, notification ids."""
    seqs: dict[str, list[int]] = {}
    changes: Counter[tuple[str, int]] = Counter()
    notes = []
    for e in events:
        if e.event == "message":
            seqs.setdefault(e.data["room"], []).append(e.data["seq"])
        elif e.event in CHANGES:
            changes[(e.data["room"], e.data["version"])] += 1
        elif e.event == "notification":
            notes.append(e.data["id"])
    return seqs, changes, notes


async def test_a_stream_resumes_across_a_restart_with_everything_once(
    make_server: Servers,
) -> None:
    server = make_server(gap_check_interval=0.3)
    api = Api(server)
    alice, bob = api.user(), api.user()
    r1, r2 = api.room(bob), api.room(bob)
    async with open_stream(server.http, [r1, r2], alice.token) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        await opening(stream, [r1, r2])
        post(api, bob, r1, "one")
        post(api, bob, r2, "two")
        post(api, bob, r1, f"@{alice.name} three")  # a notification for alice
        edit = await change(server, bob, r1, type="edit", seq=1, body="one, edited")
        await stream.until("notification")
        await stream.until("edited", version=edit["version"])
        api.close()
        server.stop()  # drains: the stream ends with `close` 1001
        await stream.drain(quiet=5)
        assert stream.ended
        assert stream.seen[-1].event == "close" and stream.seen[-1].data["code"] == 1001
        seen = stream.seen[:-1]
    cursor = last_id(seen)
    assert cursor is not None
    server.start()
    api = Api(server)
    post(api, bob, r1, "four")
    post(api, bob, r2, f"@{alice.name} five")
    react = await change(server, bob, r2, type="react", seq=1, emoji="👍", on=True)
    async with open_stream(server.http, [r1, r2], alice.token, last_event_id=cursor) as again:
        await opening(again, [r1, r2])
        await again.drain(quiet=1.0)
        assert not again.ended
        post(api, bob, r1, "six")
        await again.until("message", room=r1, seq=4)
        after = again.seen
    api.close()
    seqs, changes, notes = tally(seen + after)
    assert seqs == {r1: [1, 2, 3, 4], r2: [1, 2]}, [e.data for e in seen + after]
    assert set(changes.values()) == {1}
    assert {(r1, edit["version"]), (r2, react["version"])} == set(changes)
    assert len(notes) == 2 and notes == sorted(set(notes))


@pytest.mark.two_nodes
async def test_a_stream_read_on_one_process_resumes_on_the_other(server: Server) -> None:
    a, b = nodes(server)
    api = Api(server)
    alice, bob = api.user(), api.user()
    room = api.room(bob)
    async with open_stream(a.http, [room], alice.token) as stream:
        await opening(stream, [room])
        post(api, bob, room, "one", base=b.http)
        await stream.until("message", seq=1)
        seen = stream.seen
    # While nobody reads: messages, a change and a mention, all sent on node b.
    for n in range(2, 6):
        post(api, bob, room, f"@{alice.name} m{n}" if n == 3 else f"m{n}", base=b.http)
    edit = await change(server, bob, room, type="edit", seq=1, body="edited")
    async with open_stream(b.http, [room], alice.token, last_event_id=last_id(seen)) as again:
        await again.drain(quiet=1.0)
        after = again.seen
    api.close()
    seqs, changes, notes = tally(seen + after)
    assert seqs == {room: [1, 2, 3, 4, 5]}
    assert changes == Counter({(room, edit["version"]): 1})
    assert len(notes) == 1


async def test_notifications_arrive_and_resume_after_the_last_id(server: Server, api: Api) -> None:
    alice, bob = api.user(), api.user()
    room, other = api.room(bob), api.room(bob)  # alice streams `room` only
    async with open_stream(server.http, [room], alice.token) as stream:
        hello = (await opening(stream, [room]))[0]
        post(api, bob, other, f"@{alice.name} first")  # a room not in the stream
        first = await stream.until("notification")
        assert first.data["room"] == other and first.data["id"] > 0
        assert first.data["id"] > hello.data["last_notification_id"]
        assert first.id is not None
    post(api, bob, other, f"@{alice.name} second")
    post(api, bob, other, f"@{alice.name} third")
    async with open_stream(server.http, [room], alice.token, last_event_id=first.id) as again:
        await again.drain()
        missed = [e for e in again.seen if e.event == "notification"]
    assert [e.data["body"] for e in missed] == [f"@{alice.name} second", f"@{alice.name} third"]


async def test_a_stream_of_no_rooms_carries_an_admins_tasks_and_notifications(
    server: Server, api: Api
) -> None:
    """The admin console's fallback: no rooms, yet its tasks and notifications live."""
    boss, bob = api.admin(), api.user()
    room = api.room(bob)
    async with open_stream(server.http, [], boss.token) as stream:
        assert (await stream.next()).event == "hello"
        r = api.client.post(
            "/api/tasks",
            json={"kind": "demo", "params": {"steps": 3, "delay": 0.05}},
            headers=boss.headers,
        )
        assert r.status_code == 202, r.text
        done = await stream.until("task", id=r.json()["id"], status="succeeded")
        assert done.data["progress"] == 1.0
        post(api, bob, room, f"@{boss.name} look")
        assert (await stream.until("notification")).data["body"] == f"@{boss.name} look"
        assert not [e for e in stream.seen if e.event in ("joined", "message")]


async def test_an_admins_stream_watches_every_rooms_presence(server: Server, api: Api) -> None:
    """The admin console's online list on the fallback: `watch=presence`, as the frame."""
    boss, alice = api.admin(), api.user()
    room = api.room(alice)
    async with open_stream(server.http, [], alice.token, watch="presence") as refused:
        assert refused.response.status_code == 403
        assert refused.response.json()["code"] == "forbidden"
    async with open_stream(server.http, [], boss.token, watch="presence") as stream:
        await stream.until("presence_snapshot")
        ws = await connect(server, alice.token)
        await join(ws, room)
        joined = await stream.until("presence_changes", room=room)
        assert [u["name"] for u in joined.data["joined"]] == [alice.name]
        await ws.close()
        left = await stream.until("presence_changes", room=room, timeout=10)
        assert [u["name"] for u in left.data["left"]] == [alice.name]


@pytest.mark.one_backend
async def test_a_stream_ends_with_4001_when_its_token_expires(make_server: Servers) -> None:
    server = make_server(access_token_ttl=3)
    api = Api(server)
    alice = api.user()
    room = api.room(alice)
    async with open_stream(server.http, [room], alice.token) as stream:
        await opening(stream, [room])
        close = await stream.until("close", timeout=8)
        assert close.data["code"] == 4001, close.data
        with pytest.raises(EOFError):
            await stream.next()
    async with open_stream(server.http, [room], alice.token) as again:
        assert again.response.status_code == 401  # and the expired token opens nothing new
    api.close()


@pytest.mark.one_backend
async def test_a_stream_that_stops_reading_ends_with_4008_and_resumes_without_gaps(
    make_server: Servers,
) -> None:
    chars = 30_000
    server = make_server(outbound_buffer_bytes=50 * chars, send_rate=10_000, send_burst=10_000)
    api = Api(server)
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    closed_before = metric(server, "chat_slow_consumers_total")
    sent = []
    async with open_stream(server.http, [room], bob.token, paused=True) as stalled:
        await asyncio.sleep(0.5)  # opened and joined; from now on it reads nothing
        for i in range(2000):
            sent.append(post(api, alice, room, os.urandom(chars // 2).hex())["seq"])
            if i % 10 == 0 and metric(server, "chat_slow_consumers_total") > closed_before:
                break
        else:
            raise AssertionError("the stalled stream was never closed")
        stalled.resume()  # it wakes up: a gapless prefix, then `close` 4008
        events = [e for e in await stalled.drain(quiet=3) if e.event != "presence"]
    assert events[-1].event == "close" and events[-1].data["code"] == 4008, events[-1]
    got = [e.data["seq"] for e in events if e.event == "message"]
    assert got == sent[: len(got)], "what arrived is a gapless prefix"
    assert len(got) < len(sent)
    async with open_stream(server.http, [room], bob.token, last_event_id=last_id(events)) as again:
        await again.until("changes_checked", room=room, timeout=30)  # the replay is over
        rest = [e.data["seq"] for e in again.seen if e.event == "message"]
    assert got + rest == sent, "resumed with the rest, once, in order"
    api.close()


@pytest.mark.one_backend
async def test_keep_alive_comments_arrive_on_a_quiet_stream(make_server: Servers) -> None:
    server = make_server(stream_keepalive_interval=0.2)
    api = Api(server)
    alice = api.user()
    room = api.room(alice)
    async with open_stream(server.http, [room], alice.token) as stream:
        await opening(stream, [room])
        with pytest.raises(TimeoutError):
            await stream.next(1.0)  # nothing happens: only comments
        assert stream.comments.count("keepalive") >= 3
    api.close()


async def test_a_ticket_opens_one_stream_once_on_any_process(server: Server, api: Api) -> None:
    alice = api.user()
    room = api.room(alice)
    first, second = nodes(server)[0], nodes(server)[-1]
    r = httpx.post(f"{first.http}/api/stream/ticket", headers=alice.headers)
    assert r.status_code == 200 and r.json()["expires_in"] == 30
    ticket = r.json()["ticket"]
    async with open_stream(second.http, [room], ticket=ticket) as stream:
        assert stream.response.status_code == 200
        hello = await stream.until("hello")
        assert hello.data["user"]["name"] == alice.name
    async with open_stream(second.http, [room], ticket=ticket) as used:
        assert used.response.status_code == 401
        assert used.response.json()["code"] == "unauthorized"
    assert httpx.post(f"{first.http}/api/stream/ticket").status_code == 401  # no token
    assert "ticket=***" in second.log() and ticket not in server.log()  # never logged


@pytest.mark.one_backend
async def test_a_ticket_expires(make_server: Servers) -> None:
    server = make_server(stream_ticket_ttl=0.3)
    api = Api(server)
    alice = api.user()
    room = api.room(alice)
    ticket = api.client.post("/api/stream/ticket", headers=alice.headers).json()["ticket"]
    await asyncio.sleep(0.5)
    async with open_stream(server.http, [room], ticket=ticket) as stream:
        assert stream.response.status_code == 401
    api.close()


async def test_a_revoked_token_ends_the_stream(server: Server, api: Api) -> None:
    alice = api.user()
    room = api.room(alice)
    async with open_stream(server.http, [room], alice.token) as stream:
        await opening(stream, [room])
        started = time.monotonic()
        assert api.client.post("/api/auth/logout", headers=alice.headers).status_code == 204
        close = await stream.until("close")
        assert close.data["code"] == 4003 and time.monotonic() - started < 2
        with pytest.raises(EOFError):
            await stream.next()


@pytest.mark.one_backend
async def test_refusals_come_before_the_stream_with_a_code(server: Server, api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    private = api.room(bob, private=True)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"rooms": [room]}, 401, "unauthorized"),
        ({"rooms": [room], "token": "not a token"}, 401, "unauthorized"),
        ({"rooms": [room, "no-such-room"], "token": alice.token}, 404, "not_found"),
        ({"rooms": [private], "token": alice.token}, 404, "not_found"),
        ({"rooms": [f"r{n}" for n in range(51)], "token": alice.token}, 403, "forbidden"),
    ]
    for options, status, code in cases:
        rooms = options.pop("rooms")
        async with open_stream(server.http, rooms, **options) as stream:
            assert stream.response.status_code == status, (options, stream.response.text)
            assert stream.response.json()["code"] == code


@pytest.mark.one_backend
async def test_a_malformed_or_tampered_cursor_is_a_400(server: Server, api: Api) -> None:
    alice = api.user()
    room = api.room(alice)
    async with open_stream(server.http, [room], alice.token) as stream:
        await opening(stream, [room])
        good = last_id(stream.seen)
    assert good is not None
    body, _, mac = good.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["r"][room][0] = 0  # replay the whole room: refused, the MAC no longer fits
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    for bad in ("garbage", f"{forged}.{mac}", good[:-2], "!!!.???", "x" * 40_000):
        for in_query in (False, True):
            async with open_stream(
                server.http, [room], alice.token, last_event_id=bad, in_query=in_query
            ) as stream:
                status = stream.response.status_code
                assert status in (400, 422), (bad[:20], stream.response.text)
                if status == 400:
                    assert stream.response.json()["code"] == "bad_cursor"
    async with open_stream(
        server.http, [room], alice.token, last_event_id=good, in_query=True
    ) as resumed:
        assert resumed.response.status_code == 200


async def test_the_python_client_streams_sends_and_resumes(make_server: Servers) -> None:
    server = make_server()
    api = Api(server)
    alice, bob = api.user(), api.user()
    room = api.room(bob)
    got: list[int] = []
    async with (
        asyncio.timeout(60),
        StreamClient(server.http, token=alice.token, rooms=[room]) as chat,
    ):
        async for event in chat:
            if event.type == "changes_checked" and not got:  # live: send over REST
                ack = await chat.send(room, "over rest", ref="fixed-ref")
                again = await chat.send(room, "over rest", ref="fixed-ref")
                assert again == ack  # the same ref: stored once
            if isinstance(event, MessageFrame):
                got.append(event.seq)
                if event.seq == 1:
                    api.close()
                    server.restart()  # the stream ends (1001); the client resumes
                    api = Api(server)
                    post(api, bob, room, "while away")
                    post(api, bob, room, "and once more")
                if event.seq == 3:
                    break
        assert chat.reconnects >= 1
    assert got == [1, 2, 3]
    # A revoked token ends iteration with RevokedError.
    async with (
        asyncio.timeout(30),
        StreamClient(server.http, token=alice.token, rooms=[room]) as chat,
    ):
        async for event in chat:
            if event.type == "changes_checked":
                api.client.post("/api/auth/logout", headers=alice.headers)
                break
        with pytest.raises(RevokedError):
            async for _ in chat:
                pass
    api.close()
