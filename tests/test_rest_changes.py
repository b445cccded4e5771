"""The REST twins of `edit`, `delete`, `react`, `read` and `typing`: the same rules and
events as the frames, for clients without a WebSocket (docs/protocol.md, "Without a
WebSocket")."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import Servers
from tests.harness import Account, Api, Server, connect, expect_no_frame, join, recv_until, say
from tests.test_rest_send import post, refused


def edit(api: Api, who: Account, room: str, seq: int, body: Any) -> httpx.Response:
    return api.client.patch(
        f"/api/rooms/{room}/messages/{seq}", json={"body": body}, headers=who.headers
    )


def react(api: Api, who: Account, room: str, seq: int, emoji: str, on: bool) -> httpx.Response:
    url = f"/api/rooms/{room}/messages/{seq}/reactions/{quote(emoji, safe='')}"
    return api.client.request("PUT" if on else "DELETE", url, headers=who.headers)


def sent(api: Api, who: Account, room: str, body: str) -> int:
    r = post(api, who, room, body=body, ref=uuid.uuid4().hex)
    assert r.status_code == 201, r.text
    seq: int = r.json()["seq"]
    return seq


async def test_edit_delete_and_react_by_rest_reach_socket_members(server: Server, api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    watcher = await connect(server, bob.token)
    await join(watcher, room)
    seq = sent(api, alice, room, "frist")
    await recv_until(watcher, "message")

    r = edit(api, alice, room, seq, "first")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["type"] == "edited" and answer["body"] == "first" and answer["edited_at"]
    live = await recv_until(watcher, "edited")
    assert live["seq"] == seq and live["body"] == "first" and live["version"] == answer["version"]

    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # a ZWJ sequence, URL-encoded
    r = react(api, bob, room, seq, family, True)
    assert r.status_code == 200, r.text
    assert r.json()["users"] == [bob.name]
    assert (await recv_until(watcher, "reaction"))["users"] == [bob.name]
    again = react(api, bob, room, seq, family, True)  # already so: the same state back
    assert again.status_code == 200 and again.json()["users"] == [bob.name]
    cleared = react(api, bob, room, seq, family, False)
    assert cleared.status_code == 200 and cleared.json()["users"] == []
    assert (await recv_until(watcher, "reaction"))["users"] == []

    r = api.client.delete(f"/api/rooms/{room}/messages/{seq}", headers=alice.headers)
    assert r.status_code == 200 and r.json()["type"] == "deleted"
    assert (await recv_until(watcher, "deleted"))["seq"] == seq
    [message] = api.history(alice, room)
    assert message["deleted"] and message["body"] == "" and message["reactions"] == {}
    await watcher.close()


async def test_each_refusal_has_its_code_and_changes_nothing(server: Server, api: Api) -> None:
    alice, bob, carol = api.user(), api.user(), api.user()
    room = api.room(alice)
    private = api.room(bob, private=True)
    seq = sent(api, alice, room, "mine")
    refused(edit(api, bob, room, seq, "not yours"), 403, "forbidden")
    refused(edit(api, alice, room, seq + 1, "nothing there"), 404, "not_found")
    refused(edit(api, alice, "no-such-room", 1, "x"), 404, "not_found")
    refused(edit(api, carol, private, 1, "x"), 404, "not_found")
    refused(edit(api, alice, room, seq, "   "), 422, "bad_frame")
    refused(edit(api, alice, room, seq, 5), 422, "bad_frame")
    refused(edit(api, alice, room, seq, "x" * 32_001), 413, "too_large")
    refused(react(api, bob, room, seq, "a b", True), 422, "bad_frame")
    assert react(api, bob, room, seq, "x" * 17, True).status_code == 422
    assert edit(api, alice, room, 0, "x").status_code == 422  # seqs start at 1
    bob_delete = api.client.delete(f"/api/rooms/{room}/messages/{seq}", headers=bob.headers)
    refused(bob_delete, 403, "forbidden")
    assert api.client.patch(f"/api/rooms/{room}/messages/{seq}", json={"body": "x"}).is_error
    [message] = api.history(alice, room)
    assert message["body"] == "mine" and not message["deleted"] and message["reactions"] == {}
    r = api.client.patch(f"/api/rooms/{room}", json={"archived": True}, headers=alice.headers)
    assert r.status_code == 200
    refused(edit(api, alice, room, seq, "archived"), 403, "forbidden")
    refused(react(api, bob, room, seq, "👍", True), 403, "forbidden")


async def test_read_by_rest_moves_forward_only_and_tells_the_users_sockets(
    server: Server, api: Api
) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    first, second = sent(api, alice, room, "one"), sent(api, alice, room, "two")
    bobs_socket = await connect(server, bob.token)
    await join(bobs_socket, room)
    path = f"/api/rooms/{room}/read"
    r = api.client.post(path, json={"seq": second}, headers=bob.headers)
    assert r.status_code == 200 and r.json() == {"type": "read", "room": room, "seq": second}
    assert (await recv_until(bobs_socket, "read"))["seq"] == second
    back = api.client.post(path, json={"seq": first}, headers=bob.headers)
    assert back.status_code == 200 and back.json()["seq"] == second  # never back
    past = api.client.post(path, json={"seq": 10**6}, headers=bob.headers)
    assert past.json()["seq"] == second  # never past the newest
    refused(api.client.post(path, json={"seq": -1}, headers=bob.headers), 422, "bad_frame")
    rooms = api.client.get("/api/rooms", headers=bob.headers).json()["items"]
    assert next(item for item in rooms if item["name"] == room)["unread"] == 0
    await bobs_socket.close()


async def test_typing_by_rest_reaches_the_others_only(server: Server, api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    alices, bobs = await connect(server, alice.token), await connect(server, bob.token)
    await join(alices, room)
    await join(bobs, room)
    assert api.client.post(f"/api/rooms/{room}/typing", headers=alice.headers).status_code == 204
    assert (await recv_until(bobs, "typing"))["user"]["name"] == alice.name
    await expect_no_frame(alices, kind="typing")
    refused(api.client.post("/api/rooms/nowhere/typing", headers=alice.headers), 404, "not_found")
    for ws in (alices, bobs):
        await ws.close()


@pytest.mark.one_backend
async def test_changes_by_rest_and_socket_share_the_send_bucket(make_server: Servers) -> None:
    server = make_server(send_rate=0.5, send_burst=3)
    api = Api(server)
    alice = api.user()
    room = api.room(alice)
    ws = await connect(server, alice.token)
    await join(ws, room)
    seq = (await say(ws, room, "one"))["seq"]
    assert edit(api, alice, room, seq, "one, edited").status_code == 200
    assert react(api, alice, room, seq, "👍", True).status_code == 200
    r = edit(api, alice, room, seq, "one, edited twice")
    body = refused(r, 429, "rate_limited")
    assert body["retry_after"] > 0 and int(r.headers["Retry-After"]) >= 1
    assert api.history(alice, room)[0]["body"] == "one, edited"
    await ws.close()
    api.close()
