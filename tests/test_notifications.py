"""Mentions, DM notifications, app notifications and the inbox, end to end.

Every test runs on the memory backend (one process) and on Redis (two processes,
`ServerPair`: consecutive connections and HTTP clients land on different nodes).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from chat.storage.mentions import mentioned
from chat.storage.models import Room, RoomMember
from tests.conftest import Servers
from tests.harness import (
    Account,
    Api,
    Server,
    ServerPair,
    connect,
    expect_no_frame,
    join,
    recv,
    recv_until,
    say,
    send,
    unique,
)


def inbox(api: Api, user: Account, **params: Any) -> dict[str, Any]:
    r = api.client.get("/api/notifications", params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def mark_read(api: Api, user: Account, upto: int) -> dict[str, Any]:
    r = api.client.post("/api/notifications/read", json={"upto": upto}, headers=user.headers)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def set_level(api: Api, user: Account, room: str, level: str | None) -> dict[str, Any]:
    r = api.client.put(f"/api/rooms/{room}/notify", json={"level": level}, headers=user.headers)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def notify(api: Api, sender: Account, **body: Any) -> Any:
    return api.client.post("/api/notifications", json=body, headers=sender.headers)


def room_item(api: Api, user: Account, room: str) -> dict[str, Any]:
    r = api.client.get("/api/rooms", headers=user.headers)
    assert r.status_code == 200, r.text
    return next(item for item in r.json()["items"] if item["name"] == room)


async def dm_room(server: Server, one: Account, other: Account) -> str:
    """A DM room of two users, made in the database the way `POST /api/dms` leaves it."""
    low, high = sorted((one.id, other.id))
    name = unique("dm")
    engine = create_async_engine(server.database_url)
    try:
        async with engine.begin() as conn:
            room_id = (
                await conn.execute(
                    insert(Room)
                    .values(
                        name=name,
                        private=True,
                        owner_id=one.id,
                        kind="dm",
                        dm_key=f"{low}:{high}",
                        last_seq=0,
                        created_at=time.time(),
                    )
                    .returning(Room.id)
                )
            ).scalar_one()
            for user in (one, other):
                await conn.execute(
                    insert(RoomMember).values(
                        room_id=room_id, user_id=user.id, added_at=time.time()
                    )
                )
    finally:
        await engine.dispose()
    return name


async def test_a_mention_notifies_live_on_every_connection_and_in_the_inbox(
    server: Server, api: Api
) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    b1, b2 = await connect(server, bob.token), await connect(server, bob.token)  # no room joined
    a = await connect(server, alice.token)
    await join(a, room)
    ack = await say(a, room, f"lunch, @{bob.name.upper()}?")  # names match in any case
    frames = [await recv_until(ws, "notification") for ws in (b1, b2)]
    assert frames[0] == frames[1]
    note = frames[0]
    assert note["kind"] == "mention" and note["room"] == room and note["seq"] == ack["seq"]
    assert note["body"] == f"lunch, @{bob.name.upper()}?"
    assert note["title"] == f"{alice.name} in #{room}"
    assert note["from"]["name"] == alice.name and note["ts"] == ack["ts"]
    page = inbox(api, bob)
    assert page["items"] == [note] and page["unread"] == 1
    for ws in (a, b1, b2):
        await ws.close()


async def test_no_notification_for_your_own_name_and_one_per_message(
    server: Server, api: Api
) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    a, b = await connect(server, alice.token), await connect(server, bob.token)
    await join(a, room)
    await say(a, room, f"@{alice.name} @{bob.name} and again @{bob.name}, mail bob@{bob.name}")
    note = await recv_until(b, "notification")
    assert note["kind"] == "mention"
    await expect_no_frame(b, 0.5, kind="notification")  # one per (message, user)
    await expect_no_frame(a, 0.3, kind="notification")
    assert inbox(api, alice)["items"] == []
    assert len(inbox(api, bob)["items"]) == 1
    await say(a, room, f"x@{bob.name} is an address, not a mention")
    await expect_no_frame(b, 0.5, kind="notification")
    await say(a, room, f"ask @{bob.name}.")  # the full stop ends the sentence, not the name
    assert (await recv_until(b, "notification"))["body"] == f"ask @{bob.name}."
    for ws in (a, b):
        await ws.close()


async def test_a_mention_in_a_room_you_cannot_read_tells_you_nothing(
    server: Server, api: Api
) -> None:
    alice, carol, admin = api.user(), api.user(), api.admin()
    room = api.room(alice, private=True)
    a, c = await connect(server, alice.token), await connect(server, carol.token)
    boss = await connect(server, admin.token)
    await join(a, room)
    await say(a, room, f"secret plans, don't tell @{carol.name}; @{admin.name} may know")
    note = await recv_until(boss, "notification")  # admins can read every room
    assert note["kind"] == "mention" and note["room"] == room
    await expect_no_frame(c, 0.8, kind="notification")
    page = inbox(api, carol)
    assert page == {"items": [], "unread": 0}
    assert room not in [
        r["name"] for r in api.client.get("/api/rooms", headers=carol.headers).json()["items"]
    ]
    r = api.client.get(f"/api/rooms/{room}/notify", headers=carol.headers)
    assert r.status_code == 404
    # Once a member, the same words notify.
    added = api.client.post(
        f"/api/rooms/{room}/members", json={"username": carol.name}, headers=alice.headers
    )
    assert added.status_code == 201
    await say(a, room, f"welcome @{carol.name}")
    note = await recv_until(c, "notification")
    assert note["room"] == room and note["body"] == f"welcome @{carol.name}"
    for ws in (a, c, boss):
        await ws.close()


async def test_a_muted_room_notifies_nobody_but_its_messages_still_arrive(
    server: Server, api: Api
) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    assert api.client.get(f"/api/rooms/{room}/notify", headers=bob.headers).json() == {
        "room": room,
        "level": "mentions",
        "default": True,
    }
    assert set_level(api, bob, room, "nothing") == {
        "room": room,
        "level": "nothing",
        "default": False,
    }
    a, b = await connect(server, alice.token), await connect(server, bob.token)
    await join(a, room)
    await join(b, room)
    await say(a, room, f"@{bob.name} are you there?")
    message = await recv_until(b, "message")
    assert message["body"] == f"@{bob.name} are you there?"
    await expect_no_frame(b, 0.8, kind="notification")
    assert inbox(api, bob)["items"] == []
    assert set_level(api, bob, room, None)["default"] is True  # back to mentions
    await say(a, room, f"@{bob.name} now?")
    assert (await recv_until(b, "notification"))["body"] == f"@{bob.name} now?"
    bad = api.client.put(f"/api/rooms/{room}/notify", json={"level": "loud"}, headers=bob.headers)
    assert bad.status_code == 422
    for ws in (a, b):
        await ws.close()


async def test_every_dm_message_notifies_the_peer_unless_they_chose_less(
    server: Server, api: Api
) -> None:
    alice, bob = api.user(), api.user()
    room = await dm_room(server, alice, bob)
    assert api.client.get(f"/api/rooms/{room}/notify", headers=bob.headers).json()["level"] == "all"
    a, b = await connect(server, alice.token), await connect(server, bob.token)
    await join(a, room)
    first = await say(a, room, "hi bob")
    note = await recv_until(b, "notification")
    assert note["kind"] == "dm" and note["title"] == alice.name and note["seq"] == first["seq"]
    await say(a, room, f"@{bob.name} still one notification")
    note = await recv_until(b, "notification")
    assert note["kind"] == "dm" and note["body"] == f"@{bob.name} still one notification"
    await expect_no_frame(b, 0.5, kind="notification")
    await expect_no_frame(a, 0.1, kind="notification")  # nobody is notified of their own
    set_level(api, bob, room, "mentions")
    await say(a, room, "no ping for this one")
    await expect_no_frame(b, 0.8, kind="notification")
    await say(a, room, f"but @{bob.name} for this")
    assert (await recv_until(b, "notification"))["body"] == f"but @{bob.name} for this"
    set_level(api, bob, room, "nothing")
    await say(a, room, f"@{bob.name} muted")
    await expect_no_frame(b, 0.8, kind="notification")
    assert [n["kind"] for n in inbox(api, bob)["items"]] == ["dm", "dm", "dm"]
    for ws in (a, b):
        await ws.close()


async def test_admins_and_bots_notify_a_user_and_nobody_else_may(server: Server, api: Api) -> None:
    admin, bob = api.admin(), api.user()
    bot = api.bot(admin)
    b = await connect(server, bob.token)
    r = notify(api, admin, username=bob.name, title="Maintenance", body="at 22:00", link="/status")
    assert r.status_code == 201, r.text
    created = r.json()
    live = await recv_until(b, "notification")
    assert live == created
    assert live["kind"] == "app" and live["title"] == "Maintenance" and live["link"] == "/status"
    assert live["from"]["name"] == admin.name and "room" not in live
    r = notify(
        api, bot, username=bob.name, title="Build", body="green", link="https://ci.example/1"
    )
    assert r.status_code == 201, r.text
    assert (await recv_until(b, "notification"))["from"]["name"] == bot.name
    assert notify(api, bob, username=bob.name, title="me", body="me").status_code == 403
    for link in (
        "javascript:alert(1)",
        "//evil.example/x",
        "data:text/html,x",
        "ftp://x.y/z",
        "http://[unclosed",  # urlsplit raises on it: a 422, never a 500
    ):
        r = notify(api, admin, username=bob.name, title="t", body="b", link=link)
        assert r.status_code == 422, link
        assert "link" in r.json()["detail"]
    assert notify(api, admin, username=bob.name, title="t" * 201, body="b").status_code == 422
    assert notify(api, admin, username=bob.name, title="t", body="b" * 2001).status_code == 422
    assert notify(api, admin, username=bob.name, title="t", body=" ").status_code == 422
    r = notify(api, admin, username=unique("nobody"), title="t", body="b")
    assert r.status_code == 404 and r.json()["detail"] == "no such user"
    assert [n["kind"] for n in inbox(api, bob)["items"]] == ["app", "app"]
    await expect_no_frame(b, 0.3, kind="notification")
    await b.close()


async def test_sending_notifications_is_rate_limited(server: Server, api: Api) -> None:
    admin, bob = api.admin(), api.user()
    codes = [
        notify(api, admin, username=bob.name, title="t", body=str(n)).status_code for n in range(80)
    ]
    assert codes[:50] == [201] * 50
    assert 429 in codes[50:]
    r = notify(api, admin, username=bob.name, title="t", body="again")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


async def test_read_marks_move_forward_only_and_every_connection_hears(
    server: Server, api: Api
) -> None:
    admin, bob = api.admin(), api.user()
    ids = [
        notify(api, admin, username=bob.name, title="t", body=f"n{n}").json()["id"]
        for n in range(3)
    ]
    assert ids == sorted(ids)
    b = await connect(server, bob.token)
    assert inbox(api, bob)["unread"] == 3
    assert mark_read(api, bob, ids[1]) == {"upto": ids[1], "unread": 1}
    assert await recv_until(b, "notifications_read") == {
        "type": "notifications_read",
        "upto": ids[1],
        "unread": 1,
    }
    assert mark_read(api, bob, ids[0]) == {"upto": ids[1], "unread": 1}  # never back
    assert mark_read(api, bob, 2**53 - 1) == {"upto": ids[2], "unread": 0}  # not past the newest
    page = inbox(api, bob, after=ids[0])
    assert [n["id"] for n in page["items"]] == ids[1:] and page["unread"] == 0
    assert [n["id"] for n in inbox(api, bob, after=0, limit=1)["items"]] == ids[:1]
    r = api.client.post("/api/notifications/read", json={"upto": -1}, headers=bob.headers)
    assert r.status_code == 422
    await b.close()


async def test_hello_carries_the_inbox_counters(server: Server, api: Api) -> None:
    admin, bob = api.admin(), api.user()
    ws = await connect(server)
    await send(ws, type="auth", token=bob.token)
    hello = await recv(ws)
    assert hello["notifications_unread"] == 0 and hello["last_notification_id"] == 0
    await ws.close()
    ids = [
        notify(api, admin, username=bob.name, title="t", body=f"n{n}").json()["id"]
        for n in range(2)
    ]
    mark_read(api, bob, ids[0])
    ws = await connect(server)
    await send(ws, type="auth", token=bob.token)
    hello = await recv(ws)
    assert hello["notifications_unread"] == 1 and hello["last_notification_id"] == ids[1]
    await ws.close()


async def test_notifications_survive_a_restart_and_resume_after_the_last_seen(
    make_server: Servers,
) -> None:
    server = make_server()
    api = Api(server)
    try:
        alice, bob = api.user(), api.user()
        room = api.room(alice)
        a = await connect(server, alice.token)
        await join(a, room)
        b = await connect(server, bob.token)
        await say(a, room, f"one @{bob.name}")
        seen = await recv_until(b, "notification")
        await b.close()  # bob goes away; two more arrive meanwhile
        await say(a, room, f"two @{bob.name}")
        await say(a, room, f"three @{bob.name}")
        await a.close()
        server.restart()
        ws = await connect(server)
        await send(ws, type="auth", token=bob.token)
        hello = await recv(ws)
        assert hello["notifications_unread"] == 3
        missed = inbox(api, bob, after=seen["id"])["items"]
        assert [n["body"] for n in missed] == [f"two @{bob.name}", f"three @{bob.name}"]
        assert hello["last_notification_id"] == missed[-1]["id"]
        await ws.close()
    finally:
        api.close()


@pytest.mark.two_nodes
async def test_a_mention_on_one_node_reaches_the_user_on_the_other(
    server: Server, api: Api
) -> None:
    assert isinstance(server, ServerPair)
    node_a, node_b = server.nodes
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    b = await connect(node_b, bob.token)
    a = await connect(node_a, alice.token)
    await join(a, room)
    ack = await say(a, room, f"across the site, @{bob.name}")
    note = await recv_until(b, "notification")
    assert note["seq"] == ack["seq"] and note["room"] == room
    for ws in (a, b):
        await ws.close()


async def test_the_room_list_counts_unread_mentions(server: Server, api: Api) -> None:
    alice, bob = api.user(), api.user()
    room, other = api.room(alice), api.room(alice)
    a, b = await connect(server, alice.token), await connect(server, bob.token)
    await join(a, room)
    await say(a, room, f"@{bob.name} one")
    await say(a, room, f"@{bob.name} two")
    await say(a, room, "no mention")
    for _ in range(2):
        await recv_until(b, "notification")
    assert room_item(api, bob, room)["mentions"] == 2
    assert room_item(api, bob, other)["mentions"] == 0
    assert room_item(api, alice, room)["mentions"] == 0
    mark_read(api, bob, inbox(api, bob)["items"][-1]["id"])
    assert room_item(api, bob, room)["mentions"] == 0
    for ws in (a, b):
        await ws.close()


def test_mentions_are_bounded_and_read_like_a_person_would() -> None:
    names = " ".join(f"@user{n:02d}" for n in range(25))
    assert [r[0] for r in mentioned(names)] == [f"user{n:02d}" for n in range(20)]
    assert mentioned("@Bob, @bob and @BOB") == [("bob",)]  # one name, whatever the case
    assert mentioned("ask @bob. or @ann- or @x") == [("bob.", "bob"), ("ann-", "ann")]
    assert mentioned("bob@example.com, @@bob, `@`") == []


async def test_a_batch_full_of_mentions_is_stored(make_server: Any) -> None:
    """Many messages stored together, each naming the most people it may: their
    notifications are many more rows than a statement can bind parameters for
    (SQLite and asyncpg stop at 32,767), so they are inserted in parts."""
    server = make_server(send_rate=1000, send_burst=1000)
    api = Api(server)
    sender = api.user()
    people = [api.user() for _ in range(20)]
    room = api.room(sender)
    body = " ".join(f"@{p.name}" for p in people)
    sockets = [await connect(server, sender.token) for _ in range(5)]
    for ws in sockets:
        await join(ws, room)
    for n, ws in enumerate(sockets):  # all at once: the writer stores them in few batches
        for i in range(60):
            await send(ws, type="send", room=room, body=body, ref=f"m-{n}-{i}")
    for ws in sockets:
        answers = {}
        while len(answers) < 60:
            frame = await recv(ws, 20)
            if frame["type"] in ("ack", "error"):
                answers[frame["ref"]] = frame
        refused = [a for a in answers.values() if a["type"] != "ack"]
        assert not refused, refused[:2]
    assert inbox(api, people[0], limit=100)["unread"] == 300
    api.close()
    for ws in sockets:
        await ws.close()
