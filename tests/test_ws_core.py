"""The /ws protocol end to end: frames, errors, ordering, idempotency, resume, privacy."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ServerFactory
from tests.harness import (
    Api,
    ServerProcess,
    connect,
    expect_no_frame,
    join,
    one_node,
    owner_in_new_room,
    recv,
    recv_until,
    say,
    send,
)


async def test_hello_carries_user_and_limits(server: ServerProcess, api: Api) -> None:
    alice = api.user()
    ws = await connect(server)
    await send(ws, type="auth", token=alice.token)
    hello = await recv(ws)
    assert hello["type"] == "hello"
    assert hello["user"] == {"id": alice.id, "name": alice.name, "role": "user"}
    assert hello["limits"]["max_body_chars"] == 32000
    assert hello["expires_at"].endswith("Z")
    await ws.close()


async def test_join_send_ack_then_message_to_every_member(server: ServerProcess, api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    a1, a2, b = [await connect(server, t) for t in (alice.token, alice.token, bob.token)]
    for ws in (a1, a2, b):
        await join(ws, room)
    await send(a1, type="send", room=room, body="hi all", ref="r-1")
    ack = await recv_until(a1, "ack")
    own = await recv_until(a1, "message")  # ack comes first, then the message itself
    assert ack["ref"] == "r-1" and ack["seq"] == 1 and ack["room"] == room
    for ws in (a2, b):
        msg = await recv_until(ws, "message")
        assert msg == own
    # Message frames show every field, a display name not set as null.
    assert own["user"] == {"id": alice.id, "name": alice.name, "role": "user", "display_name": None}
    assert own["body"] == "hi all" and own["id"] == ack["id"] and own["ts"] == ack["ts"]
    for ws in (a1, a2, b):
        await ws.close()


async def test_presence_counts_a_user_once(server: ServerProcess, api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    b = await connect(server, bob.token)
    joined = await join(b, room)
    assert [u["name"] for u in joined["presence"]] == [bob.name]
    a1 = await connect(server, alice.token)
    joined = await join(a1, room)
    assert sorted(u["name"] for u in joined["presence"]) == sorted([alice.name, bob.name])
    event = await recv_until(b, "presence")
    assert event == {
        "type": "presence",
        "room": room,
        "event": "join",
        "user": {"id": alice.id, "name": alice.name, "role": "user"},
    }
    a2 = await connect(server, alice.token)
    await join(a2, room)
    await expect_no_frame(b, 0.5, kind="presence")  # a second connection is not news
    await a2.close()
    await expect_no_frame(b, 0.5, kind="presence")
    await send(a1, type="leave", room=room, ref="bye")
    left = await recv_until(a1, "left")
    assert left == {"type": "left", "room": room, "ref": "bye"}
    event = await recv_until(b, "presence", timeout=8)
    assert event["event"] == "leave" and event["user"]["id"] == alice.id
    await a1.close()
    await b.close()


async def test_joins_in_one_tick_are_announced_together(
    make_server: ServerFactory,
) -> None:
    """n users joining at once cost each member a frame per tick, not one per join."""
    server = make_server(presence_tick=2)
    api = Api(server)
    owner, room, watcher = await owner_in_new_room(server, api)
    users = [api.user() for _ in range(12)]
    sockets = await asyncio.gather(*(connect(server, u.token) for u in users))
    await asyncio.gather(*(join(ws, room) for ws in sockets))
    present: list[str] = []
    frames = 0
    while len(present) < len(users):
        frame = await recv(watcher, 5)
        if frame["type"] == "presence":
            frames += 1
            present.append(frame["user"]["name"])
        elif frame["type"] == "presence_changes":
            frames += 1
            assert frame["room"] == room and frame["left"] == []
            # A batch may list the watcher too, if its own join fell in that tick.
            present.extend(u["name"] for u in frame["joined"] if u["name"] != owner.name)
    assert sorted(present) == sorted(u.name for u in users)  # each once
    assert frames <= 3, frames  # the joins took a few seconds at most: two or three ticks
    for ws in [watcher, *sockets]:
        await ws.close()
    api.close()


async def test_typing_reaches_others_only(server: ServerProcess, api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    a, b = await connect(server, alice.token), await connect(server, bob.token)
    await join(a, room)
    await join(b, room)
    await send(a, type="typing", room=room)
    typing = await recv_until(b, "typing")
    assert typing == {
        "type": "typing",
        "room": room,
        "user": {"id": alice.id, "name": alice.name, "role": "user"},
    }
    await expect_no_frame(a, 0.3, kind="typing")
    await a.close()
    await b.close()


async def test_ping_pong(server: ServerProcess, api: Api) -> None:
    ws = await connect(server, api.user().token)
    await send(ws, type="ping", ref="p1")
    pong = await recv(ws)
    assert pong["type"] == "pong" and pong["ref"] == "p1"
    await ws.close()


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"room": "x"}', "type"),
        ('{"type": "shout"}', "unknown frame type"),
        ('{"type": "send", "room": "x", "ref": "r"}', "body"),
        ('{"type": "send", "room": "x", "body": 5, "ref": "r"}', "body"),
        ('{"type": "join", "room": "x", "since": "3"}', "since"),
        ('{"type": "join", "room": "x", "since": -1}', "since"),
        ('{"type": "send", "room": "x", "body": "hi"}', "ref"),
        ('{"type": "join", "room": ""}', "room"),
        ("[" * 5000 + "]" * 5000, ""),
    ],
)
async def test_bad_frames_get_errors_and_keep_the_connection(
    server: ServerProcess, api: Api, raw: str, detail: str
) -> None:
    ws = await connect(server, api.user().token)
    await ws.send(raw)
    error = await recv(ws)
    assert error["type"] == "error" and error["code"] == "bad_frame", error
    assert detail in error["detail"]
    await send(ws, type="ping")
    assert (await recv(ws))["type"] == "pong"
    await ws.close()


async def test_errors_echo_ref(server: ServerProcess, api: Api) -> None:
    ws = await connect(server, api.user().token)
    await send(ws, type="send", room="nowhere", body=7, ref="mine")
    error = await recv(ws)
    assert error["ref"] == "mine" and error["code"] == "bad_frame"
    await ws.close()


async def test_binary_frame_is_refused(server: ServerProcess, api: Api) -> None:
    ws = await connect(server, api.user().token)
    await ws.send(b'{"type": "ping"}')
    error = await recv(ws)
    assert error["code"] == "bad_frame" and "binary" in error["detail"]
    await ws.close()


async def test_not_found_and_not_joined(server: ServerProcess, api: Api) -> None:
    alice = api.user()
    room = api.room(alice)
    ws = await connect(server, alice.token)
    await send(ws, type="join", room="no-such-room-" + uuid.uuid4().hex, ref="j")
    assert (await recv(ws))["code"] == "not_found"
    await send(ws, type="send", room=room, body="hi", ref="s")
    error = await recv(ws)
    assert (error["code"], error["ref"]) == ("not_joined", "s")
    await send(ws, type="leave", room=room)
    assert (await recv(ws))["code"] == "not_joined"
    await send(ws, type="typing", room=room)
    assert (await recv(ws))["code"] == "not_joined"
    await ws.close()


async def test_too_large_body_keeps_connection(server: ServerProcess, api: Api) -> None:
    _, room, ws = await owner_in_new_room(server, api)
    await send(ws, type="send", room=room, body="x" * 32_001, ref="big")
    error = await recv(ws)
    assert (error["code"], error["ref"]) == ("too_large", "big")
    ack = await say(ws, room, "x" * 32_000)
    assert ack["seq"] == 1
    await ws.close()


async def test_forbidden_reauth_with_another_users_token(server: ServerProcess, api: Api) -> None:
    alice, bob = api.user(), api.user()
    ws = await connect(server, alice.token)
    await send(ws, type="auth", token=bob.token, ref="swap")
    error = await recv(ws)
    assert (error["code"], error["ref"]) == ("forbidden", "swap")
    await send(ws, type="auth", token=alice.token, ref="again")
    reauthed = await recv(ws)
    assert reauthed["type"] == "reauthed" and reauthed["ref"] == "again"
    await ws.close()


async def test_rate_limited_excess_is_not_stored(make_server: Any) -> None:
    server = make_server(send_rate=0.5, send_burst=3, rate_limit_close_after=100)
    api = Api(server)
    alice, room, ws = await owner_in_new_room(server, api)
    acks, errors = 0, []
    for i in range(6):
        await send(ws, type="send", room=room, body=f"m{i}", ref=f"r{i}")
    while acks + len(errors) < 6:
        frame = await recv(ws)
        if frame["type"] == "ack":
            acks += 1
        elif frame["type"] == "error":
            errors.append(frame)
    assert acks == 3
    assert {e["code"] for e in errors} == {"rate_limited"}
    assert all(e["retry_after"] > 0 for e in errors)
    assert [m["body"] for m in api.history(alice, room)] == ["m2", "m1", "m0"]
    await ws.close()
    api.close()


async def test_same_ref_is_stored_once_even_across_reconnects(
    server: ServerProcess, api: Api
) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    b = await connect(server, bob.token)
    await join(b, room)
    acks = []
    for _ in range(2):
        ws = await connect(server, alice.token)
        await join(ws, room)
        for _ in range(5 if not acks else 2):
            acks.append(await say(ws, room, "only once", ref="same-ref"))
        await ws.close()
    assert len({json.dumps(a, sort_keys=True) for a in acks}) == 1
    first = await recv_until(b, "message")
    assert first["body"] == "only once"
    await expect_no_frame(b, 0.5, kind="message")
    assert len(api.history(alice, room)) == 1
    await b.close()


async def test_concurrent_senders_get_gapless_seq(server: ServerProcess, api: Api) -> None:
    owner = api.user()
    room = api.room(owner)
    senders = [api.user() for _ in range(8)]
    watcher = await connect(server, owner.token)
    await join(watcher, room)
    per_sender = 15

    async def burst(token: str) -> list[int]:
        ws = await connect(server, token)
        await join(ws, room)
        refs = [uuid.uuid4().hex for _ in range(per_sender)]
        await asyncio.gather(
            *(send(ws, type="send", room=room, body=f"m{i}", ref=r) for i, r in enumerate(refs))
        )
        seqs = []
        while len(seqs) < per_sender:
            frame = await recv(ws, 15)
            assert frame["type"] != "error", frame
            if frame["type"] == "ack":
                seqs.append(frame["seq"])
        await ws.close()
        return seqs

    results = await asyncio.gather(*(burst(s.token) for s in senders))
    total = per_sender * len(senders)
    assert sorted(s for seqs in results for s in seqs) == list(range(1, total + 1))
    received = [(await recv_until(watcher, "message", timeout=15))["seq"] for _ in range(total)]
    assert received == list(range(1, total + 1))  # every member sees them in seq order
    await watcher.close()


async def test_join_since_replays_missed_messages_in_order(server: ServerProcess, api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    a = await connect(server, alice.token)
    await join(a, room)
    for i in range(5):
        await say(a, room, f"m{i + 1}")
    b = await connect(server, bob.token)
    joined = await join(b, room, since=2)
    assert joined["last_seq"] == 5 and joined["replay_truncated"] is False
    replayed = [await recv_until(b, "message") for _ in range(3)]
    assert [m["seq"] for m in replayed] == [3, 4, 5]
    assert [m["body"] for m in replayed] == ["m3", "m4", "m5"]
    await say(a, room, "live")
    live = await recv_until(b, "message")
    assert (live["seq"], live["body"]) == (6, "live")
    # A since from the future replays nothing; the client sees last_seq.
    c = await connect(server, bob.token)
    joined = await join(c, room, since=999)
    assert joined["last_seq"] == 6
    await expect_no_frame(c, 0.3, kind="message")
    for ws in (a, b, c):
        await ws.close()


async def test_replay_cap_truncates_and_history_pages_the_rest(make_server: Any) -> None:
    server = make_server(replay_cap=3)
    api = Api(server)
    alice, room, a = await owner_in_new_room(server, api)
    for i in range(7):
        await say(a, room, f"m{i + 1}")
    b = await connect(server, alice.token)
    joined = await join(b, room, since=0)
    assert joined["replay_truncated"] is True and joined["last_seq"] == 7
    replayed = [await recv_until(b, "message") for _ in range(3)]
    assert [m["seq"] for m in replayed] == [1, 2, 3]
    rest = api.history(alice, room, after=3, limit=100)
    assert [m["seq"] for m in rest] == [4, 5, 6, 7]
    await a.close()
    await b.close()
    api.close()


async def test_messages_sent_during_a_join_arrive_once_in_order(
    server: ServerProcess, api: Api
) -> None:
    alice, bob, carol = api.user(), api.user(), api.user()
    room = api.room(alice)
    a, c = await connect(server, alice.token), await connect(server, carol.token)
    await join(a, room)
    await join(c, room)
    for i in range(15):  # two senders: each stays within the default burst
        await say(a, room, f"old{i}")

    async def keep_sending() -> None:
        for i in range(15):
            await send(c, type="send", room=room, body=f"new{i}", ref=f"new{i}")
            await asyncio.sleep(0.002)

    b = await connect(server, bob.token)
    sender = asyncio.create_task(keep_sending())
    await send(b, type="join", room=room, since=0)
    seqs = []
    while len(seqs) < 30:
        frame = await recv(b, 10)
        if frame["type"] == "message":
            seqs.append(frame["seq"])
    await sender
    assert seqs == list(range(1, 31))
    await a.close()
    await c.close()
    await b.close()


def test_history_pages_newest_first(api: Api, server: ServerProcess) -> None:
    alice = api.user()
    room = api.room(alice)

    async def fill() -> None:
        ws = await connect(server, alice.token)
        await join(ws, room)
        for i in range(12):
            await say(ws, room, f"m{i + 1}")
        await ws.close()

    asyncio.run(fill())
    page = api.history(alice, room, limit=5)
    assert [m["seq"] for m in page] == [12, 11, 10, 9, 8]
    older = api.history(alice, room, before=8, limit=5)
    assert [m["seq"] for m in older] == [7, 6, 5, 4, 3]
    forward = api.history(alice, room, after=10)
    assert [m["seq"] for m in forward] == [11, 12]
    assert page[0]["type"] == "message" and page[0]["room"] == room
    r = api.client.get(f"/api/rooms/{room}/messages", params={"limit": 0}, headers=alice.headers)
    assert r.status_code == 422
    r = api.client.get(f"/api/rooms/{room}/messages", params={"limit": 1000}, headers=alice.headers)
    assert len(r.json()["items"]) == 12


async def test_private_rooms(server: ServerProcess, api: Api) -> None:
    owner, guest, stranger = api.user(), api.user(), api.user()
    room = api.room(owner, private=True)
    missing = "missing-" + uuid.uuid4().hex
    # A stranger cannot tell a private room from a missing one.
    for name in (room, missing):
        r = api.client.get(f"/api/rooms/{name}/messages", headers=stranger.headers)
        assert r.status_code == 404
        assert r.json()["detail"] == "no such room, or you may not read it"
    assert room not in [
        r["name"] for r in api.client.get("/api/rooms", headers=stranger.headers).json()["items"]
    ]
    s = await connect(server, stranger.token)
    for name in (room, missing):
        await send(s, type="join", room=name)
        error = await recv(s)
        assert error["code"] == "not_found"
        assert error["detail"] == "no such room, or you may not read it"
    # Only the owner adds members.
    r = api.client.post(
        f"/api/rooms/{room}/members", json={"username": stranger.name}, headers=guest.headers
    )
    assert r.status_code == 404
    r = api.client.post(
        f"/api/rooms/{room}/members", json={"username": guest.name}, headers=owner.headers
    )
    assert r.status_code == 201
    g = await connect(server, guest.token)
    await join(g, room)
    await say(g, room, "now I am in")
    listed = api.client.get("/api/rooms", headers=guest.headers).json()["items"]
    entry = next(r for r in listed if r["name"] == room)
    assert entry["private"] is True and entry["member"] is True
    await s.close()
    await g.close()


def test_room_names(api: Api) -> None:
    alice = api.user()
    weird = "<b>x</b>'; DROP TABLE rooms;-- " + uuid.uuid4().hex[:6]
    assert api.room(alice, weird) == weird
    assert weird in [
        r["name"] for r in api.client.get("/api/rooms", headers=alice.headers).json()["items"]
    ]
    r = api.client.post("/api/rooms", json={"name": weird}, headers=alice.headers)
    assert r.status_code == 409
    assert api.history(alice, weird) == []  # the '/' in the name survives the URL
    for bad in ("", "   ", "x" * 65, "tab\there", "zero\u200bwidth"):
        r = api.client.post("/api/rooms", json={"name": bad}, headers=alice.headers)
        assert r.status_code == 422, bad


async def test_origin_allowlist(make_server: Any) -> None:
    server = make_server(allowed_origins="https://chat.example.com")
    api = Api(server)
    token = api.user().token
    for origin in (
        "https://evil.example",
        "null",
        "https://chat.example.com.evil.example",
        "http://chat.example.com",
    ):
        with pytest.raises(InvalidStatus) as refused:
            await connect(server, token, additional_headers={"Origin": origin})
        assert refused.value.response.status_code == 403
    ok = await connect(server, token, additional_headers={"Origin": "https://chat.example.com"})
    node = one_node(server)  # its own origin: scheme, host and port
    same = await connect(node, token, additional_headers={"Origin": node.http})
    bot = await connect(server, token)  # no Origin at all, as from a bot
    for ws in (ok, same, bot):
        await ws.close()
    api.close()


async def test_auth_frame_deadline_and_order(make_server: Any) -> None:
    server = make_server(auth_timeout=1)
    api = Api(server)
    silent = await connect(server)
    with pytest.raises(ConnectionClosed):
        await recv(silent, 5)
    assert silent.close_code == 1008
    early = await connect(server)
    await send(early, type="join", room="general")
    with pytest.raises(ConnectionClosed):
        await recv(early, 5)
    assert early.close_code == 1008
    api.close()


async def test_messages_survive_a_restart(make_server: Any) -> None:
    server = make_server()
    api = Api(server)
    alice, room, ws = await owner_in_new_room(server, api)
    acks = [await say(ws, room, f"m{i}") for i in range(5)]
    await ws.close()
    server.restart()
    ws = await connect(server, alice.token)
    await join(ws, room, since=0)
    replayed = [await recv_until(ws, "message") for _ in range(5)]
    assert [(m["id"], m["seq"]) for m in replayed] == [(a["id"], a["seq"]) for a in acks]
    assert (await say(ws, room, "after restart"))["seq"] == 6
    await ws.close()
    api.close()
