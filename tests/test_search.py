"""Full-text search end to end over HTTP, on the suite's database (SQLite, or PostgreSQL
with `CHAT_TEST_DATABASE_URL`): words, phrases and prefixes, ranking and paging, the
room filter, who may find what, edits, deletions and purges, hostile queries, and the
migration indexing messages stored before it."""

from __future__ import annotations

import asyncio
import json
import random
import string
import time
import uuid
from typing import Any

import httpx
import pytest
from alembic import command
from websockets.asyncio.client import ClientConnection

from chat.storage.migrate import alembic_config
from chat_client import ApiError, ChatClient, MessageFrame
from tests.conftest import Databases, ServerFactory, Servers
from tests.dbseed import age_messages, seed_messages
from tests.harness import Account, Api, Server, connect, join, recv, say, send

# Search does not depend on the broker: the memory backend runs it (both databases).
pytestmark = pytest.mark.one_backend


@pytest.fixture(scope="module")
def sserver(module_servers: ServerFactory) -> Server:
    server: Server = module_servers(send_rate=200, send_burst=400)
    return server


@pytest.fixture(scope="module")
def sapi(sserver: Server) -> Any:
    client = Api(sserver)
    yield client
    client.close()


def word() -> str:
    """A word no other message holds (letters only: every engine keeps it whole)."""
    return "".join(random.choices(string.ascii_lowercase, k=12))


def search(api: Api, who: Account, q: str, **params: Any) -> httpx.Response:
    return api.client.get("/api/search", params={"q": q, **params}, headers=who.headers)


def found(api: Api, who: Account, q: str, **params: Any) -> list[dict[str, Any]]:
    r = search(api, who, q, **params)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def bodies(items: list[dict[str, Any]]) -> list[str]:
    return [i["body"] for i in items]


async def ask(ws: ClientConnection, **frame: Any) -> dict[str, Any]:
    """Send a frame with a fresh ref; the frame answering it (its event or an error)."""
    ref = uuid.uuid4().hex
    await send(ws, ref=ref, **frame)
    while True:
        answer = await recv(ws)
        if answer.get("ref") == ref:
            return answer


async def post(server: Server, who: Account, room: str, *texts: str) -> list[int]:
    """Send `texts` to `room` as `who` over the socket; their seqs."""
    ws = await connect(server, who.token)
    try:
        await join(ws, room)
        return [(await say(ws, room, text))["seq"] for text in texts]
    finally:
        await ws.close()


async def test_finds_words_phrases_and_prefixes_with_marked_snippets(
    sserver: Server, sapi: Api
) -> None:
    alice = sapi.user()
    room = sapi.room(alice)
    w = word()
    await post(
        sserver,
        alice,
        room,
        f"The quick {w.upper()} fox",
        f"a lazy {w} dog, quick",
        "nothing to see here",
    )
    items = found(sapi, alice, w)
    assert sorted(bodies(items)) == sorted([f"The quick {w.upper()} fox", f"a lazy {w} dog, quick"])
    first = items[0]
    assert first["room"] == room and first["user"]["name"] == alice.name
    assert {"seq", "id", "ts", "reactions", "edited_at", "deleted", "snippet"} <= set(first)
    # The snippet is the body in segments, the matching words marked (never markup).
    for item in items:
        assert "".join(s["text"] for s in item["snippet"]) == item["body"]
        assert [s["text"].lower() for s in item["snippet"] if s["match"]] == [w]
    # Every word is required; a phrase needs its words in order; `*` is a prefix.
    assert bodies(found(sapi, alice, f"{w} fox")) == [f"The quick {w.upper()} fox"]
    assert bodies(found(sapi, alice, f'"quick {w}"')) == [f"The quick {w.upper()} fox"]
    assert bodies(found(sapi, alice, f'"{w} quick"')) == []
    assert len(found(sapi, alice, f"{w[:6]}*")) == 2
    assert found(sapi, alice, f"{w[:6]}") == []  # without `*`, a whole word only
    assert found(sapi, alice, f"{w} elephant") == []


async def test_best_match_first_newest_among_equals_and_by_date_on_request(
    sserver: Server, sapi: Api
) -> None:
    alice = sapi.user()
    room = sapi.room(alice)
    w = word()
    long_one = f"{w} " + " ".join(["filler"] * 40)
    await post(sserver, alice, room, long_one, f"{w} {w} {w}", f"same {w}", f"same {w}")
    items = found(sapi, alice, w)
    assert bodies(items) == [f"{w} {w} {w}", f"same {w}", f"same {w}", long_one]
    assert items[1]["seq"] > items[2]["seq"]  # equal scores: the newest first
    newest = found(sapi, alice, w, order="newest")
    assert [i["seq"] for i in newest] == sorted((i["seq"] for i in items), reverse=True)
    assert search(sapi, alice, w, order="oldest").status_code == 422


async def test_pages_with_offset_until_next_offset_is_null(sserver: Server, sapi: Api) -> None:
    alice = sapi.user()
    room = sapi.room(alice)
    w = word()
    seqs = await seed_messages(
        sserver.database_url, room, alice.name, [f"{w} n{i}" for i in range(25)]
    )
    seen: list[int] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        r = search(sapi, alice, w, limit=10, offset=offset)
        assert r.status_code == 200, r.text
        answer = r.json()
        seen += [i["seq"] for i in answer["items"]]
        offset = answer["next_offset"]
        pages += 1
    assert pages == 3 and sorted(seen) == seqs
    for bad in ({"limit": 0}, {"limit": 51}, {"offset": -1}, {"offset": 1001}, {"limit": "x"}):
        r = search(sapi, alice, w, **bad)
        assert r.status_code == 422 and r.json()["detail"], bad


async def test_room_filter_and_rooms_the_caller_cannot_read(sserver: Server, sapi: Api) -> None:
    alice, bob, carol = sapi.user(), sapi.user(), sapi.user()
    admin = sapi.admin()
    public, other_public = sapi.room(alice), sapi.room(bob)
    secret = sapi.room(bob, private=True)
    dm = sapi.client.post("/api/dms", json={"username": carol.name}, headers=bob.headers)
    assert dm.status_code == 201, dm.text
    dm_room = dm.json()["name"]
    w = word()
    await post(sserver, alice, public, f"public {w}")
    await post(sserver, bob, other_public, f"other public {w}")
    await post(sserver, bob, secret, f"secret {w}")
    await post(sserver, bob, dm_room, f"direct {w}")

    assert sorted(bodies(found(sapi, alice, w))) == [f"other public {w}", f"public {w}"]
    assert bodies(found(sapi, alice, w, room=public)) == [f"public {w}"]
    assert sorted(bodies(found(sapi, bob, w))) == sorted(
        [f"public {w}", f"other public {w}", f"secret {w}", f"direct {w}"]
    )
    assert bodies(found(sapi, carol, w, room=dm_room)) == [f"direct {w}"]
    # An admin reads private rooms, but other people's direct messages are theirs.
    assert sorted(bodies(found(sapi, admin, w))) == sorted(
        [f"public {w}", f"other public {w}", f"secret {w}"]
    )
    missing = search(sapi, alice, w, room="no such room " + w)
    assert missing.status_code == 404
    for who, room in ((alice, secret), (alice, dm_room), (admin, dm_room)):
        r = search(sapi, who, w, room=room)
        assert r.status_code == 404 and r.json() == missing.json(), (who.name, room)
    # Let in: found; removed: gone again.
    added = sapi.client.post(
        f"/api/rooms/{secret}/members", json={"username": alice.name}, headers=bob.headers
    )
    assert added.status_code == 201
    assert bodies(found(sapi, alice, w, room=secret)) == [f"secret {w}"]
    removed = sapi.client.delete(f"/api/rooms/{secret}/members/{alice.name}", headers=bob.headers)
    assert removed.status_code == 204
    assert f"secret {w}" not in bodies(found(sapi, alice, w))
    assert search(sapi, alice, w).status_code == 200
    assert sapi.client.get("/api/search", params={"q": w}).status_code == 401


async def test_edited_found_by_current_text_deleted_never(sserver: Server, sapi: Api) -> None:
    alice = sapi.user()
    room = sapi.room(alice)
    before, after, gone = word(), word(), word()
    ws = await connect(sserver, alice.token)
    try:
        await join(ws, room)
        seq = (await say(ws, room, f"first draft {before}"))["seq"]
        doomed = (await say(ws, room, f"regret {gone}"))["seq"]
        assert found(sapi, alice, before)
        edited = await ask(ws, type="edit", room=room, seq=seq, body=f"final text {after}")
        assert edited["type"] == "edited"
        assert found(sapi, alice, before) == []
        items = found(sapi, alice, after)
        assert bodies(items) == [f"final text {after}"] and items[0]["edited_at"]
        assert found(sapi, alice, "draft " + after) == []
        deleted = await ask(ws, type="delete", room=room, seq=doomed)
        assert deleted["type"] == "deleted"
        assert found(sapi, alice, gone) == []
        assert found(sapi, alice, "regret", room=room) == []
    finally:
        await ws.close()


async def test_purged_messages_are_never_found(sserver: Server, sapi: Api) -> None:
    admin = sapi.admin()
    room = sapi.room(admin)
    w = word()
    old = await seed_messages(sserver.database_url, room, admin.name, [f"old {w}"] * 3)
    await seed_messages(sserver.database_url, room, admin.name, [f"new {w}"])
    await age_messages(sserver.database_url, room, old, 3 * 86400)
    assert len(found(sapi, admin, w)) == 4
    r = sapi.client.post(
        "/api/tasks",
        json={"kind": "purge", "params": {"older_than_days": 2, "room": room}},
        headers=admin.headers,
    )
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 20
    while True:
        task = sapi.client.get(f"/api/tasks/{r.json()['id']}", headers=admin.headers).json()
        if task["status"] not in ("queued", "running") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert task["status"] == "succeeded", task
    assert bodies(found(sapi, admin, w)) == [f"new {w}"]


HOSTILE = [
    '"',
    'a"b',
    '""',
    "NOT",
    "*",
    "**",
    "a*",
    "a OR",
    "OR AND NOT",
    "(",
    ")",
    "NEAR(a b)",
    "NEAR/2",
    "col:x",
    "body:x",
    "^x",
    "-x",
    "+x",
    "x -",
    "a & b | !c",
    "a <-> b",
    "'",
    "\\",
    "'; DROP TABLE messages; --",
    "a:* & b",
    "😀",
    "🙂 smile 🙂",
    "\u0000",
    "a\u0000b",
    "x" * 10_000,
    " ".join(["w"] * 400),
]


async def test_anything_typed_is_a_result_or_a_clear_422(sserver: Server, sapi: Api) -> None:
    alice = sapi.user()
    room = sapi.room(alice)
    w = word()
    await post(sserver, alice, room, f"is it not {w} or near (x) col:x? 😀 smile")
    for q in HOSTILE:
        r = search(sapi, alice, q)
        assert r.status_code in (200, 422), (q[:40], r.status_code, r.text[:200])
        detail = r.json().get("detail")
        assert r.status_code == 200 or detail, q[:40]
    # Operators are plain words here: each of these finds the message.
    for q in (f"{w} OR", f"NOT {w}", f'"{w}', f"{w} near(x)", f"col:x {w}", f"-{w}", f"^{w}"):
        assert bodies(found(sapi, alice, q)) == [f"is it not {w} or near (x) col:x? 😀 smile"], q
    assert len(found(sapi, alice, f"😀 {w}")) == 1  # emoji are not words: ignored
    # Nothing to search for, or too much: 422, with a reason.
    for q, reason in (("", "empty"), ("   ", "empty"), ("!!! 😀", "word"), ("x" * 10_000, "500")):
        r = search(sapi, alice, q)
        assert r.status_code == 422 and reason in r.json()["detail"], (q[:20], r.text)
    r = sapi.client.get("/api/search", headers=alice.headers)
    assert r.status_code == 422
    many = " ".join(f"w{i}" for i in range(17))
    assert "16" in search(sapi, alice, many).json()["detail"]


def test_messages_stored_before_the_index_are_found(
    make_process: Servers, databases: Databases
) -> None:
    """Migration 0005_search indexes what is already there, and goes down and up."""
    server = make_process(send_rate=200, send_burst=400)
    api = Api(server)
    try:
        alice = api.user()
        room = api.room(alice)
        w = word()
        server.stop()
        command.downgrade(alembic_config(server.database_url), "0005_files")
        asyncio.run(seed_messages(server.database_url, room, alice.name, [f"legacy {w}"]))
        server.start()  # applies the migrations again: the index is built from the rows
        assert bodies(found(api, alice, w)) == [f"legacy {w}"]
    finally:
        api.close()


async def test_the_python_client_and_the_cli_search(sserver: Server, sapi: Api) -> None:
    alice = sapi.user()
    room = sapi.room(alice)
    w = word()
    await post(sserver, alice, room, f"hello {w} world", f"bye {w}")
    client = ChatClient(sserver.ws, token=alice.token)
    try:  # HTTP only: no connection needed
        page = await client.search(f"hello {w}")
        assert [h.message.body for h in page.items] == [f"hello {w} world"]
        assert isinstance(page.items[0].message, MessageFrame) and page.next_offset is None
        assert page.items[0].marked() == f"[hello] [{w}] world"
        assert len((await client.search(w, room=room, limit=1)).items) == 1
        with pytest.raises(ApiError) as refused:
            await client.search("  ")
        assert refused.value.status == 422 and "empty" in str(refused.value)
        with pytest.raises(ApiError) as missing:
            await client.search(w, room=f"nope {w}")
        assert missing.value.status == 404
    finally:
        await client.close()
    done = sserver.cli("search", w, "--url", sserver.ws, "--token", alice.token)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(f"#{room} [" in line for line in lines)
    assert any(line.endswith(f"{alice.name}: hello [{w}] world") for line in lines)
    done = sserver.cli(
        "search", f'"bye {w}"', "--json", "--url", sserver.ws, "--token", alice.token
    )
    hit = json.loads(done.stdout)
    assert hit["body"] == f"bye {w}" and {"text": w, "match": True} in hit["snippet"]
    done = sserver.cli("search", "!!!", "--url", sserver.ws, "--token", alice.token)
    assert done.returncode == 1 and done.stderr.startswith("chat search: ")


async def test_ranking_covers_the_newest_matches_and_more_words_reach_older_ones(
    sserver: Server, sapi: Api
) -> None:
    """A word in more than `RANK_WINDOW` messages: the best match among the newest
    5,000 comes first; an older one is found by narrowing the query."""
    alice = sapi.user()
    room = sapi.room(alice)
    w, rare = word(), word()
    await seed_messages(sserver.database_url, room, alice.name, [f"{w} {w} {w} {rare}"])
    filler = [f"{w} " + " ".join(["filler"] * 20)] * 5_000
    await seed_messages(sserver.database_url, room, alice.name, filler)
    strong = await seed_messages(sserver.database_url, room, alice.name, [f"{w} {w}"])
    assert [i["seq"] for i in found(sapi, alice, w, limit=2)][:1] == strong
    assert f"{w} {w} {w} {rare}" not in bodies(found(sapi, alice, w, limit=50))
    assert bodies(found(sapi, alice, f"{w} {rare}")) == [f"{w} {w} {w} {rare}"]


async def test_a_search_past_the_time_limit_is_a_clear_503_on_postgresql(
    make_server: ServerFactory,
) -> None:
    """PostgreSQL cuts a search off at `CHAT_SEARCH_TIMEOUT` with 503 `search_too_slow`
    (the room and the rest of the API unharmed); SQLite has no such limit."""
    server = make_server(search_timeout=0.001, send_rate=200, send_burst=400)
    api = Api(server)
    try:
        alice = api.user()
        room = api.room(alice)
        w = word()
        await seed_messages(server.database_url, room, alice.name, [f"{w} {w} filler"] * 5_000)
        r = search(api, alice, w)
        if server.database_url.startswith("postgresql"):
            assert r.status_code == 503, r.text
            assert r.json() == {
                "detail": "the search ran too long: add words, a phrase or a room",
                "code": "search_too_slow",
            }
        else:
            assert r.status_code == 200 and len(r.json()["items"]) == 20, r.text
        assert api.client.get("/api/rooms", headers=alice.headers).status_code == 200
    finally:
        api.close()
