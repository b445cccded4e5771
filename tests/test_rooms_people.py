"""Direct messages, profiles, finding people, members, removal, topic and archive,
end to end on real servers (one process on the memory backend; two sharing Redis)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

from chat.storage.models import Room
from tests.harness import (
    Account,
    Api,
    Server,
    ServerPair,
    connect,
    expect_no_frame,
    join,
    nodes,
    recv,
    recv_until,
    say,
    send,
    unique,
)


def rooms_of(api: Api, account: Account) -> dict[str, dict[str, Any]]:
    items = api.client.get("/api/rooms", headers=account.headers).json()["items"]
    return {item["name"]: item for item in items}


def open_dm(api: Api, caller: Account, username: str) -> httpx.Response:
    return api.client.post("/api/dms", json={"username": username}, headers=caller.headers)


def person(account: Account, display_name: str | None = None) -> dict[str, Any]:
    return {"id": account.id, "name": account.name, "role": "user", "display_name": display_name}


async def refused(ws: Any, ref: str) -> dict[str, Any]:
    """The `error` frame answering the frame sent with `ref`."""
    return await recv_until(ws, "error", ref=ref)


# --- direct messages ----------------------------------------------------------------


async def test_dm_created_once_however_concurrently_asked(server: Server, api: Api) -> None:
    alice, bob = api.user(), api.user()
    # Each side on its own process when there are two: the race is across processes.
    urls = [node.http for node in nodes(server)]
    async with (
        httpx.AsyncClient(base_url=urls[0], timeout=20) as a,
        httpx.AsyncClient(base_url=urls[-1], timeout=20) as b,
    ):
        asks = [
            client.post("/api/dms", json={"username": peer.name}, headers=caller.headers)
            for _ in range(10)
            for client, caller, peer in ((a, alice, bob), (b, bob, alice))
        ]
        answers = await asyncio.gather(*asks)
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 19 + [201], [r.text for r in answers if r.status_code >= 400]
    names = {r.json()["name"] for r in answers}
    assert len(names) == 1
    for r in answers:
        body = r.json()
        assert body["kind"] == "dm" and body["private"] is True and body["archived"] is False
    by_alice = [r.json() for r in answers[0::2]]
    by_bob = [r.json() for r in answers[1::2]]
    assert all(item["peer"] == person(bob) for item in by_alice)
    assert all(item["peer"] == person(alice) for item in by_bob)
    # Asked again later: the same room, 200.
    again = open_dm(api, bob, alice.name.upper())
    assert again.status_code == 200 and again.json()["name"] in names


async def test_dm_is_listed_with_the_peer_and_closed_to_others(server: Server, api: Api) -> None:
    alice, bob, carol = api.user(), api.user(), api.user()
    admin = api.admin()
    created = open_dm(api, alice, bob.name)
    assert created.status_code == 201, created.text
    dm = created.json()["name"]
    assert rooms_of(api, alice)[dm]["peer"] == person(bob)
    assert rooms_of(api, bob)[dm]["peer"] == person(alice)
    assert rooms_of(api, bob)[dm]["kind"] == "dm" and rooms_of(api, bob)[dm]["member"] is True
    assert dm not in rooms_of(api, carol)
    assert dm not in rooms_of(api, admin)  # readable by admins, but not their conversation
    # The two talk; a third person sees nothing of it.
    a, b, c = [await connect(server, t) for t in (alice.token, bob.token, carol.token)]
    await join(a, dm)
    await join(b, dm)
    await say(a, dm, "just us")
    assert (await recv_until(b, "message", room=dm))["body"] == "just us"
    await send(c, type="join", room=dm, ref="peek")
    assert (await refused(c, "peek"))["code"] == "not_found"
    r = api.client.get(f"/api/rooms/{dm}/messages", headers=carol.headers)
    assert r.status_code == 404
    assert api.client.get(f"/api/rooms/{dm}/members", headers=carol.headers).status_code == 404
    # Exactly two members, ever: nobody is added, nobody leaves or is removed.
    members = api.client.get(f"/api/rooms/{dm}/members", headers=alice.headers).json()["items"]
    assert sorted(m["id"] for m in members) == sorted([alice.id, bob.id])
    for who in (alice, admin):
        r = api.client.post(
            f"/api/rooms/{dm}/members", json={"username": carol.name}, headers=who.headers
        )
        assert r.status_code == 403, r.text
        assert "direct conversation" in r.json()["detail"]
    for who, target in ((alice, bob), (bob, bob), (admin, alice)):
        r = api.client.delete(f"/api/rooms/{dm}/members/{target.name}", headers=who.headers)
        assert r.status_code == 403, r.text
    # An admin reads it for moderation, without becoming a member.
    assert [m["body"] for m in api.history(admin, dm)] == ["just us"]
    members = api.client.get(f"/api/rooms/{dm}/members", headers=admin.headers).json()["items"]
    assert len(members) == 2
    for ws in (a, b, c):
        await ws.close()


def test_dm_refusals(api: Api) -> None:
    alice = api.user()
    r = open_dm(api, alice, alice.name)
    assert r.status_code == 409 and "another person" in r.json()["detail"]
    r = open_dm(api, alice, unique("nobody"))
    assert r.status_code == 404 and r.json()["detail"] == "no such user"
    admin, banned = api.admin(), api.user()
    assert api.client.post(f"/api/admin/users/{banned.name}/ban", headers=admin.headers).is_success
    assert open_dm(api, alice, banned.name).status_code == 404
    # Room names of DMs are reserved: nobody creates one that could collide.
    for name in ("dm:1:2", "DM:anything"):
        r = api.client.post("/api/rooms", json={"name": name}, headers=alice.headers)
        assert r.status_code == 422 and "reserved" in r.json()["detail"]


def test_dm_creation_is_rate_limited(make_server: Any) -> None:
    server = make_server(room_creations_per_user=2)
    api = Api(server)
    try:
        alice, bob, carol, dave = api.user(), api.user(), api.user(), api.user()
        assert open_dm(api, alice, bob.name).status_code == 201
        assert open_dm(api, alice, carol.name).status_code == 201
        r = open_dm(api, alice, dave.name)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert open_dm(api, alice, bob.name).status_code == 200  # opening one is free
        assert open_dm(api, dave, alice.name).status_code == 201  # dave's own window
    finally:
        api.close()


# --- people -------------------------------------------------------------------------


def test_user_search(api: Api) -> None:
    prefix = "s" + uuid.uuid4().hex[:8]
    found = [api.user(f"{prefix}_{i:02d}") for i in range(22)]
    admin = api.admin()
    r = api.client.get("/api/users", params={"q": prefix.upper()}, headers=found[0].headers)
    assert r.status_code == 200
    items = r.json()["items"]
    assert [i["name"] for i in items] == [a.name for a in found[:20]]  # by name, at most 20
    assert items[0] == person(found[0])
    # A prefix of the display name finds its user too, ignoring case.
    shown = "Zq" + uuid.uuid4().hex[:8]
    r = api.client.patch(
        "/api/me", json={"display_name": f"{shown} Smith"}, headers=found[21].headers
    )
    assert r.status_code == 200, r.text
    r = api.client.get("/api/users", params={"q": shown.lower()}, headers=found[0].headers)
    assert r.json()["items"] == [person(found[21], f"{shown} Smith")]
    # `_` is a literal, not a wildcard; banned users are not found.
    r = api.client.get("/api/users", params={"q": f"{prefix}_2"}, headers=found[0].headers)
    assert [i["name"] for i in r.json()["items"]] == [found[20].name, found[21].name]
    r = api.client.get(
        "/api/users", params={"q": prefix.replace("s", "_", 1)}, headers=admin.headers
    )
    assert r.json()["items"] == []
    api.client.post(f"/api/admin/users/{found[20].name}/ban", headers=admin.headers)
    r = api.client.get("/api/users", params={"q": f"{prefix}_2"}, headers=found[0].headers)
    assert [i["name"] for i in r.json()["items"]] == [found[21].name]
    # The query is required and bounded; the caller must be signed in.
    for params in ({}, {"q": ""}, {"q": "x" * 65}, {"q": "a", "limit": 21}):
        r = api.client.get("/api/users", params=params, headers=found[0].headers)
        assert r.status_code == 422, params
    assert api.client.get("/api/users", params={"q": prefix}).status_code == 401


async def test_display_name(server: Server, api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    a = await connect(server, alice.token)  # open before the change: follows it live
    b = await connect(server, bob.token)
    await join(a, room)
    await join(b, room)
    for bad in (
        {"display_name": ""},
        {"display_name": "   "},
        {"display_name": "x" * 65},
        {"display_name": "bell\x07"},
        {"display_name": "new\nline"},
        {},
    ):
        r = api.client.patch("/api/me", json=bad, headers=alice.headers)
        assert r.status_code == 422, bad
        assert r.json()["detail"]
    r = api.client.patch(
        "/api/me", json={"display_name": "  Ali\u0301ce Q.  "}, headers=alice.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["display_name"] == "Alíce Q."  # trimmed, NFC
    me = api.client.get("/api/me", headers=alice.headers).json()
    assert me == {
        "id": alice.id,
        "username": alice.name,
        "name": alice.name,
        "role": "user",
        "display_name": "Alíce Q.",
    }
    # With two processes the change reaches the other one through the broker.
    await asyncio.sleep(0.3 if isinstance(server, ServerPair) else 0)
    await say(a, room, "who am I")
    message = await recv_until(b, "message", room=room)
    assert message["user"] == person(alice, "Alíce Q.")
    assert api.history(bob, room)[0]["user"] == person(alice, "Alíce Q.")
    # A new connection is greeted with it (another process's cache: within 2 s).
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        fresh = await connect(server)
        await send(fresh, type="auth", token=alice.token)
        hello = await recv_until(fresh, "hello")
        await fresh.close()
        if hello["user"].get("display_name") == "Alíce Q.":
            break
        assert asyncio.get_running_loop().time() < deadline, hello
        await asyncio.sleep(0.5)
    # null clears it.
    r = api.client.patch("/api/me", json={"display_name": None}, headers=alice.headers)
    assert r.status_code == 200 and r.json()["display_name"] is None
    await a.close()
    await b.close()


# --- members, removal, leaving ------------------------------------------------------


async def test_members_list(server: Server, api: Api) -> None:
    owner, added, stranger, walker = api.user(), api.user(), api.user(), api.user()
    private = api.room(owner, private=True)
    r = api.client.post(
        f"/api/rooms/{private}/members", json={"username": added.name}, headers=owner.headers
    )
    assert r.status_code == 201
    items = api.client.get(f"/api/rooms/{private}/members", headers=added.headers).json()["items"]
    assert sorted(i["id"] for i in items) == sorted([owner.id, added.id])
    r = api.client.get(f"/api/rooms/{private}/members", headers=stranger.headers)
    assert r.status_code == 404
    # A public room's members: its owner and whoever joined it.
    public = api.room(owner)
    ws = await connect(server, walker.token)
    await join(ws, public)
    items = api.client.get(f"/api/rooms/{public}/members", headers=stranger.headers).json()["items"]
    assert sorted(i["id"] for i in items) == sorted([owner.id, walker.id])
    assert rooms_of(api, walker)[public]["member"] is True
    # Paged by name.
    first = min(items, key=lambda i: i["name"].casefold())
    r = api.client.get(
        f"/api/rooms/{public}/members",
        params={"after": first["name"], "limit": 5},
        headers=walker.headers,
    )
    assert [i["name"] for i in r.json()["items"]] == [
        i["name"] for i in items if i["id"] != first["id"]
    ]
    await ws.close()


async def removal_is_seen(server_a: Server, server_b: Server, api: Api) -> None:
    """The owner removes bob through `server_a`; bob's socket is on `server_b`."""
    owner, bob, carol = api.user(), api.user(), api.user()
    room = api.room(owner, private=True)
    for member in (bob, carol):
        r = api.client.post(
            f"/api/rooms/{room}/members", json={"username": member.name}, headers=owner.headers
        )
        assert r.status_code == 201
    o = await connect(server_a, owner.token)
    b = await connect(server_b, bob.token)
    idle = await connect(server_b, bob.token)  # bob's other tab, not in the room
    await join(o, room)
    await join(b, room)
    await say(o, room, "before")
    assert (await recv_until(b, "message", room=room))["body"] == "before"
    async with httpx.AsyncClient(base_url=nodes(server_a)[0].http, timeout=10) as http:
        r = await http.delete(f"/api/rooms/{room}/members/{bob.name}", headers=owner.headers)
    assert r.status_code == 204, r.text
    assert (await recv_until(b, "removed")) == {"type": "removed", "room": room}
    assert (await recv_until(idle, "removed")) == {"type": "removed", "room": room}
    await say(o, room, "after")
    await expect_no_frame(b, 0.5, kind="message")
    # Gone from the private room: it does not exist for bob any more.
    await send(b, type="send", room=room, body="still here?", ref="late")
    assert (await refused(b, "late"))["code"] == "not_joined"
    await send(b, type="join", room=room, ref="back")
    assert (await refused(b, "back"))["code"] == "not_found"
    assert api.client.get(f"/api/rooms/{room}/messages", headers=bob.headers).status_code == 404
    assert room not in rooms_of(api, bob)
    items = api.client.get(f"/api/rooms/{room}/members", headers=carol.headers).json()["items"]
    assert bob.id not in [i["id"] for i in items]
    for ws in (o, b, idle):
        await ws.close()


async def test_removed_member_stops_getting_the_room(server: Server, api: Api) -> None:
    await removal_is_seen(server, server, api)


@pytest.mark.two_nodes
async def test_removed_member_on_another_process(server: Server, api: Api) -> None:
    assert isinstance(server, ServerPair)
    await removal_is_seen(server.nodes[0], server.nodes[1], api)


async def test_who_may_remove_and_leave(server: Server, api: Api) -> None:
    owner, bob, carol = api.user(), api.user(), api.user()
    admin = api.admin()
    room = api.room(owner)
    for who in (bob, carol):
        ws = await connect(server, who.token)
        await join(ws, room)  # joining a public room makes one a member
        await ws.close()
    r = api.client.delete(f"/api/rooms/{room}/members/{carol.name}", headers=bob.headers)
    assert r.status_code == 403 and r.json()["detail"] == "only the room's owner or an admin"
    r = api.client.delete(f"/api/rooms/{room}/members/{owner.name}", headers=owner.headers)
    assert r.status_code == 409 and "owner" in r.json()["detail"]
    r = api.client.delete(f"/api/rooms/{room}/members/{owner.name}", headers=admin.headers)
    assert r.status_code == 409
    r = api.client.delete(f"/api/rooms/{room}/members/{unique('x')}", headers=owner.headers)
    assert r.status_code == 404 and r.json()["detail"] == "no such user"
    r = api.client.delete(f"/api/rooms/{room}/members/{admin.name}", headers=owner.headers)
    assert r.status_code == 404 and "not a member" in r.json()["detail"]
    # An admin removes carol; bob leaves by himself, his socket is told.
    r = api.client.delete(f"/api/rooms/{room}/members/{carol.name}", headers=admin.headers)
    assert r.status_code == 204
    b = await connect(server, bob.token)
    await join(b, room)
    r = api.client.delete(f"/api/rooms/{room}/members/{bob.name}", headers=bob.headers)
    assert r.status_code == 204
    assert (await recv_until(b, "removed"))["room"] == room
    items = api.client.get(f"/api/rooms/{room}/members", headers=owner.headers).json()["items"]
    assert [i["id"] for i in items] == [owner.id]
    # A public room is open to anyone: he may join it again.
    assert (await join(b, room))["room"] == room
    await b.close()


# --- topic and archive --------------------------------------------------------------


async def test_topic_and_archive(server: Server, api: Api) -> None:
    owner, bob, stranger = api.user(), api.user(), api.user()
    room = api.room(owner)
    o, b = await connect(server, owner.token), await connect(server, bob.token)
    await join(o, room)
    await join(b, room)
    ack = await say(b, room, "first")
    path = f"/api/rooms/{room}"
    r = api.client.patch(path, json={"topic": "Release  plans "}, headers=owner.headers)
    assert r.status_code == 200, r.text
    assert r.json()["topic"] == "Release  plans" and r.json()["archived"] is False
    for ws in (o, b):
        frame = await recv_until(ws, "room")
        assert frame == {"type": "room", "room": room, "topic": "Release  plans", "archived": False}
    # Refusals: not the owner, too long, not one printable line, nothing given.
    assert api.client.patch(path, json={"topic": "x"}, headers=bob.headers).status_code == 403
    for bad in ({"topic": "x" * 501}, {"topic": "two\nlines"}, {}, {"archived": None}):
        r = api.client.patch(path, json=bad, headers=owner.headers)
        assert r.status_code == 422, bad
    private = api.room(owner, private=True)
    r = api.client.patch(f"/api/rooms/{private}", json={"topic": "x"}, headers=stranger.headers)
    assert r.status_code == 404
    # Archived: read only for everyone, readable as before.
    r = api.client.patch(path, json={"archived": True}, headers=owner.headers)
    assert r.status_code == 200 and r.json()["archived"] is True
    for ws in (o, b):
        frame = await recv_until(ws, "room")
        assert frame == {"type": "room", "room": room, "topic": "Release  plans", "archived": True}
    await send(b, type="send", room=room, body="anyone?", ref="ro-1")
    error = await refused(b, "ro-1")
    assert error["code"] == "forbidden" and error["detail"] == "the room is archived: read only"
    await expect_no_frame(o, 0.3, kind="message")
    assert [m["body"] for m in api.history(owner, room)] == ["first"]
    listed = rooms_of(api, bob)[room]
    assert listed["archived"] is True and listed["topic"] == "Release  plans"
    assert listed["kind"] == "room" and listed["peer"] is None
    late = await connect(server, stranger.token)
    joined = await join(late, room)
    assert joined["archived"] is True and joined["topic"] == "Release  plans"
    await send(late, type="send", room=room, body="me too", ref="ro-2")
    assert (await refused(late, "ro-2"))["code"] == "forbidden"
    # Unarchived (topic cleared too): sends work again, with no gap in the seqs.
    r = api.client.patch(path, json={"archived": False, "topic": ""}, headers=owner.headers)
    assert r.status_code == 200 and r.json()["topic"] is None
    frame = await recv_until(b, "room")
    assert frame == {"type": "room", "room": room, "topic": None, "archived": False}
    again = await say(b, room, "back")
    assert again["seq"] == ack["seq"] + 1
    for ws in (o, b, late):
        await ws.close()


async def archive_behind_the_servers_back(database_url: str, room: str, archived: bool) -> None:
    """Set the flag in the database only: no `room` event, as if it had been lost."""
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(update(Room).where(Room.name == room).values(archived=archived))
    finally:
        await engine.dispose()


async def test_the_database_refuses_messages_for_an_archived_room(server: Server, api: Api) -> None:
    """A connection that missed the archiving still cannot write: the writer refuses,
    the other messages of its batch are stored, and no seq is lost."""
    owner = api.user()
    closed, open_ = api.room(owner), api.room(owner)
    ws = await connect(server, owner.token)
    await join(ws, closed)
    await join(ws, open_)
    first = await say(ws, closed, "before")
    await archive_behind_the_servers_back(server.database_url, closed, True)
    await send(ws, type="send", room=closed, body="too late", ref="x-1")
    await send(ws, type="send", room=open_, body="fine", ref="y-1")
    error = await refused(ws, "x-1")
    assert error["code"] == "forbidden" and error["detail"] == "the room is archived: read only"
    ack = await recv_until(ws, "ack", ref="y-1")
    assert ack["seq"] == 1
    assert [m["body"] for m in api.history(owner, closed)] == ["before"]
    await archive_behind_the_servers_back(server.database_url, closed, False)
    again = await say(ws, closed, "after")
    assert again["seq"] == first["seq"] + 1  # the refused one took no seq
    await ws.close()


async def test_joins_at_once_all_make_members(server: Server, api: Api) -> None:
    """Many first joins together (stored in batches) each record their member, once."""
    owner = api.user()
    room = api.room(owner)
    people = [api.user() for _ in range(30)]
    sockets = [await connect(server, p.token) for p in people]
    sockets.append(await connect(server, people[0].token))  # a second tab of one user
    await asyncio.gather(*(join(ws, room) for ws in sockets))
    items = api.client.get(f"/api/rooms/{room}/members", headers=owner.headers).json()["items"]
    assert sorted(i["id"] for i in items) == sorted([owner.id, *(p.id for p in people)])
    for ws in sockets:
        await ws.close()


async def test_a_join_racing_the_removal_leaves_nothing_joined(make_server: Any) -> None:
    """A removal that lands while the member's `join` is being answered (between its
    read of the room and its registration, or during its replay) still wins: the join
    is refused, or it ends before `removed`; nothing of the room comes after `removed`
    and the connection is not left joined to a room it may no longer read."""
    server = make_server(join_rate=1000, join_burst=1000)
    api = Api(server)
    owner, bob = api.user(), api.user()
    room = api.room(owner, private=True)
    o = await connect(server, owner.token)
    await join(o, room)
    for i in range(20):
        await say(o, room, f"history {i}")
    b = await connect(server, bob.token)
    urls = [node.http for node in nodes(server)]
    members = f"/api/rooms/{room}/members"
    async with httpx.AsyncClient(base_url=urls[-1], timeout=10) as http:
        for attempt in range(30):
            r = await http.post(members, json={"username": bob.name}, headers=owner.headers)
            assert r.status_code == 201, r.text
            ref = f"join-{attempt}"
            await send(b, type="join", room=room, since=0, ref=ref)
            await asyncio.sleep(attempt % 8 * 0.001)
            r = await http.delete(f"{members}/{bob.name}", headers=owner.headers)
            assert r.status_code == 204, r.text
            frames = []
            while True:
                try:
                    frames.append(await recv(b, 0.3))
                except TimeoutError:
                    break
            kinds = [f["type"] for f in frames]
            assert "removed" in kinds, frames
            after = frames[kinds.index("removed") + 1 :]
            assert not [f for f in after if f.get("room") == room and f["type"] != "error"], (
                attempt,
                kinds,
            )
            await send(b, type="typing", room=room, ref=f"t-{attempt}")
            answer = await recv_until(b, "error", ref=f"t-{attempt}")
            assert answer["code"] == "not_joined", answer
    api.close()
    for ws in (o, b):
        await ws.close()


def test_text_the_database_cannot_hold_is_never_a_500(api: Api) -> None:
    """NUL (and lone surrogates) in the new query parameters and paths: PostgreSQL
    cannot bind them, so they must be answered before the database sees them."""
    owner = api.user()
    room = api.room(owner)
    for path, params in (
        ("/api/users", {"q": "a\x00"}),
        ("/api/users", {"q": "\x00"}),
        (f"/api/rooms/{room}/members", {"after": "a\x00"}),
        ("/api/rooms/a%00b/members", {}),
        ("/api/rooms/a%00b/notify", {}),
        ("/api/rooms/a%00b/messages/1/history", {}),
    ):
        r = api.client.get(path, params=params, headers=owner.headers)
        assert r.status_code < 500, (path, params, r.status_code, r.text[:200])
    for method, path, body in (
        ("POST", "/api/dms", {"username": "a\x00b"}),
        ("DELETE", f"/api/rooms/{room}/members/a%00b", None),
        ("PATCH", "/api/rooms/a%00b", {"topic": "x"}),
        ("PUT", "/api/rooms/a%00b/notify", {"level": "all"}),
    ):
        r = api.client.request(method, path, json=body, headers=owner.headers)
        assert r.status_code < 500, (method, path, r.status_code, r.text[:200])


async def test_a_join_racing_an_unarchive_can_send(make_server: Any) -> None:
    """The connection's read-only flag comes from a read made after the join is
    registered for `room` events: a join racing an unarchive is never left refusing
    sends to an open room (nor, racing an archive, accepting them)."""
    server = make_server(join_rate=1000, join_burst=1000, send_rate=1000, send_burst=1000)
    api = Api(server)
    owner, bob = api.user(), api.user()
    room = api.room(owner)
    b = await connect(server, bob.token)
    urls = [node.http for node in nodes(server)]
    async with httpx.AsyncClient(base_url=urls[-1], timeout=10) as http:
        for attempt in range(30):
            r = await http.patch(
                f"/api/rooms/{room}", json={"archived": True}, headers=owner.headers
            )
            assert r.status_code == 200, r.text
            await send(b, type="join", room=room, ref=f"j-{attempt}")
            await asyncio.sleep(attempt % 6 * 0.001)
            r = await http.patch(
                f"/api/rooms/{room}", json={"archived": False}, headers=owner.headers
            )
            assert r.status_code == 200, r.text
            await recv_until(b, "joined", ref=f"j-{attempt}")
            await asyncio.sleep(0.2 if isinstance(server, ServerPair) else 0.05)
            await send(b, type="send", room=room, body=f"open {attempt}", ref=f"s-{attempt}")
            while True:
                answer = await recv(b)
                if answer.get("ref") == f"s-{attempt}":
                    break
            assert answer["type"] == "ack", (attempt, answer)
            # Leave the room's members, so the next join records the membership again.
            r = await http.delete(f"/api/rooms/{room}/members/{bob.name}", headers=owner.headers)
            assert r.status_code == 204, r.text
            await recv_until(b, "removed")
    api.close()
    await b.close()
