"""Read cursors and unread counts end to end: `read` frames, `joined`, `GET /api/rooms`."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import create_async_engine

from chat.storage.models import Room
from tests.harness import (
    Account,
    Api,
    Server,
    connect,
    expect_no_frame,
    join,
    nodes,
    owner_in_new_room,
    recv_until,
    say,
    send,
)


def listed_unread(api: Api, who: Account, room: str) -> int:
    r = api.client.get("/api/rooms", headers=who.headers)
    assert r.status_code == 200, r.text
    (item,) = [i for i in r.json()["items"] if i["name"] == room]
    unread: int = item["unread"]
    return unread


async def mark(ws: Any, room: str, seq: int) -> dict[str, Any]:
    """Send `read` with a ref; its echo (the cursor now)."""
    ref = uuid.uuid4().hex
    await send(ws, type="read", room=room, seq=seq, ref=ref)
    return await recv_until(ws, "read", ref=ref)


async def test_unread_counts_others_messages_after_the_cursor(server: Server, api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    a, b = await connect(server, alice.token), await connect(server, bob.token)
    await join(a, room)
    joined = await join(b, room)
    assert joined["read_seq"] == 0 and joined["unread"] == 0
    for i in range(3):
        await say(a, room, f"from alice {i}")
    await say(b, room, "bob's own: never unread for bob")
    await recv_until(b, "message", seq=4)
    assert listed_unread(api, bob, room) == 3
    assert listed_unread(api, alice, room) == 1
    assert (await mark(b, room, 2))["seq"] == 2
    assert listed_unread(api, bob, room) == 1
    # A deleted message is not unread either.
    await send(a, type="delete", room=room, seq=3, ref="del")
    await recv_until(a, "deleted", ref="del")
    assert listed_unread(api, bob, room) == 0
    # Reconnecting: the cursor and the count are the server's.
    await b.close()
    await say(a, room, "while bob was away")
    b = await connect(server, bob.token)
    joined = await join(b, room)
    assert joined["read_seq"] == 2 and joined["unread"] == 1
    assert listed_unread(api, bob, room) == 1
    for ws in (a, b):
        await ws.close()


async def test_the_cursor_never_moves_back_nor_past_the_newest_message(
    server: Server, api: Api
) -> None:
    alice, room, a = await owner_in_new_room(server, api)
    for i in range(5):
        await say(a, room, f"m{i}")
    assert (await mark(a, room, 4))["seq"] == 4
    assert (await mark(a, room, 2))["seq"] == 4  # back: the cursor stays
    assert (await mark(a, room, 999))["seq"] == 5  # past the end: the newest seq
    b = await connect(server, alice.token)
    assert (await join(b, room))["read_seq"] == 5
    for ws in (a, b):
        await ws.close()


async def test_a_read_on_one_connection_reaches_the_users_other_connections(
    server: Server, api: Api
) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    many = nodes(server)
    # On the redis backend the two connections are on different processes.
    a1, a2 = await connect(many[0], alice.token), await connect(many[-1], alice.token)
    b = await connect(server, bob.token)
    for ws in (a1, a2, b):
        await join(ws, room)
    for i in range(3):
        await say(b, room, f"for alice {i}")
    await send(a1, type="read", room=room, seq=2)  # no ref: no answer on a1
    told = await recv_until(a2, "read")
    assert told == {"type": "read", "room": room, "seq": 2}
    await expect_no_frame(a1, kind="read")
    await expect_no_frame(b, kind="read")  # someone else's cursor is private
    # Not moving (already there) tells nobody.
    await send(a1, type="read", room=room, seq=1)
    await expect_no_frame(a2, kind="read")
    for ws in (a1, a2, b):
        await ws.close()


async def test_read_needs_a_joined_room(server: Server, api: Api) -> None:
    alice = api.user()
    room = api.room(alice)
    a = await connect(server, alice.token)
    await send(a, type="read", room=room, seq=1, ref="r")
    refused = await recv_until(a, "error", ref="r")
    assert refused["code"] == "not_joined"
    await send(a, type="read", room=room, seq=-1, ref="neg")
    assert (await recv_until(a, "error", ref="neg"))["code"] == "bad_frame"
    await a.close()


async def test_the_room_list_counts_unread_in_any_number_of_rooms(make_server: Any) -> None:
    """An admin lists every room but others' DMs: past 32,767 of them one `IN` list
    of room ids could not be bound (asyncpg's limit), and the list was a 500."""
    server = make_server()
    api = Api(server)
    admin = api.admin()
    engine = create_async_engine(server.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(Room),
                [
                    {
                        "name": f"bulk-{n}",
                        "private": True,
                        "owner_id": admin.id,
                        "kind": "room",
                        "last_seq": 0,
                        "created_at": time.time(),
                    }
                    for n in range(33_000)
                ],
            )
            # Members: unread is counted in the rooms one belongs to.
            await conn.execute(
                text(
                    "INSERT INTO room_members (room_id, user_id, added_at)"
                    " SELECT id, :user, 0 FROM rooms WHERE name LIKE 'bulk-%'"
                ),
                {"user": admin.id},
            )
    finally:
        await engine.dispose()
    r = api.client.get("/api/rooms", headers=admin.headers, timeout=60)
    assert r.status_code == 200, r.text[:200]
    items = r.json()["items"]
    assert len(items) >= 33_000 and all(i["unread"] == 0 for i in items)
    api.close()
