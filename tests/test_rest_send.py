"""REST send (`POST /api/rooms/{room}/messages`): the WebSocket `send` over HTTP, with
the same rules, bucket, write path and refusals, and one message per `ref` whichever
transport carried it."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Servers
from tests.harness import Account, Api, Server, all_messages, connect, join, recv_until, say
from tests.test_write_path import refuse_inserts, writes_stalled


def post(api: Api, who: Account | None, room: str, **body: Any) -> httpx.Response:
    headers = who.headers if who is not None else {}
    return api.client.post(f"/api/rooms/{room}/messages", json=body, headers=headers)


def refused(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["code"] == code and body["detail"], body
    return body


async def test_rest_then_websocket_with_one_ref_store_once(server: Server, api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    watcher = await connect(server, bob.token)
    await join(watcher, room)
    r = post(api, alice, room, body="first by rest", ref="same-1")
    assert r.status_code == 201
    ack = r.json()
    assert ack["type"] == "ack" and ack["ref"] == "same-1" and ack["room"] == room
    live = await recv_until(watcher, "message")  # fanned out like a socket's send
    assert live["seq"] == ack["seq"] and live["body"] == "first by rest"
    ws = await connect(server, alice.token)
    await join(ws, room)
    again = await say(ws, room, "first by rest", ref="same-1")
    assert {k: again[k] for k in ("id", "seq", "ts")} == {k: ack[k] for k in ("id", "seq", "ts")}
    twice = post(api, alice, room, body="first by rest", ref="same-1")
    assert twice.status_code == 200 and twice.json() == ack
    assert [m["body"] for m in all_messages(api, alice, room)] == ["first by rest"]
    for socket in (watcher, ws):
        await socket.close()


async def test_websocket_then_rest_with_one_ref_store_once(server: Server, api: Api) -> None:
    alice = api.user()
    room = api.room(alice)
    ws = await connect(server, alice.token)
    await join(ws, room)
    ack = await say(ws, room, "first by socket", ref="same-2")
    await ws.close()
    r = post(api, alice, room, body="first by socket", ref="same-2")
    assert r.status_code == 200
    assert {k: r.json()[k] for k in ("id", "seq", "ts", "ref")} == {
        k: ack[k] for k in ("id", "seq", "ts", "ref")
    }
    assert len(all_messages(api, alice, room)) == 1


async def test_a_public_room_never_joined_takes_a_send_and_a_reply(
    server: Server, api: Api
) -> None:
    owner, passer = api.user(), api.user()
    room = api.room(owner)
    first = post(api, passer, room, body="hello", ref=uuid.uuid4().hex)
    assert first.status_code == 201
    members = api.client.get(f"/api/rooms/{room}/members", headers=owner.headers).json()
    assert passer.name in [m["name"] for m in members["items"]]  # as a join makes one
    reply = post(api, owner, room, body="hi", ref=uuid.uuid4().hex, reply_to=first.json()["seq"])
    assert reply.status_code == 201
    assert all_messages(api, owner, room)[-1]["reply_to"]["seq"] == first.json()["seq"]


@pytest.mark.one_backend
async def test_each_refusal_has_its_code_and_stores_nothing(server: Server, api: Api) -> None:
    alice, bob, carol = api.user(), api.user(), api.user()
    room = api.room(alice)
    private = api.room(bob, private=True)
    archived = api.room(alice)
    r = api.client.patch(f"/api/rooms/{archived}", json={"archived": True}, headers=alice.headers)
    assert r.status_code == 200
    ref = uuid.uuid4().hex
    assert post(api, None, room, body="x", ref=ref).status_code == 401
    refused(post(api, carol, "no-such-room", body="x", ref=ref), 404, "not_found")
    refused(post(api, carol, private, body="x", ref=ref), 404, "not_found")
    refused(post(api, alice, archived, body="x", ref=ref), 403, "forbidden")
    refused(post(api, alice, room, body="   ", ref=ref), 422, "bad_frame")
    refused(post(api, alice, room, body="x"), 422, "bad_frame")  # no ref
    refused(post(api, alice, room, body="x", ref="r" * 65), 422, "bad_frame")
    refused(post(api, alice, room, body=5, ref=ref), 422, "bad_frame")
    bad_json = api.client.post(
        f"/api/rooms/{room}/messages", content=b"{not json", headers=alice.headers
    )
    refused(bad_json, 422, "bad_frame")
    refused(post(api, alice, room, body="x" * 32_001, ref=ref), 413, "too_large")
    refused(post(api, alice, room, body="x", ref=ref, reply_to=99), 404, "not_found")
    refused(
        post(api, alice, room, body="x", ref=ref, attachments=["0" * 32]), 422, "bad_attachment"
    )
    assert all_messages(api, alice, room) == []
    assert post(api, alice, room, body="now fine", ref=ref).status_code == 201


@pytest.mark.one_backend
async def test_rest_and_socket_sends_share_one_bucket(make_server: Servers) -> None:
    server = make_server(send_rate=0.5, send_burst=3)
    api = Api(server)
    alice = api.user()
    room = api.room(alice)
    ws = await connect(server, alice.token)
    await join(ws, room)
    await say(ws, room, "one")
    await say(ws, room, "two")
    assert post(api, alice, room, body="three", ref=uuid.uuid4().hex).status_code == 201
    r = post(api, alice, room, body="four", ref=uuid.uuid4().hex)
    body = refused(r, 429, "rate_limited")
    assert body["retry_after"] > 0 and int(r.headers["Retry-After"]) >= 1
    await ws.send(json.dumps({"type": "send", "room": room, "body": "five", "ref": "r5"}))
    assert (await recv_until(ws, "error", ref="r5"))["code"] == "rate_limited"
    assert len(all_messages(api, alice, room)) == 3
    await ws.close()
    api.close()


@pytest.mark.one_backend
async def test_a_refused_batch_is_a_503_and_the_same_ref_later_lands_once(
    make_server: Servers,
) -> None:
    server = make_server()
    api = Api(server)
    alice = api.user()
    room = api.room(alice)
    await refuse_inserts(server.database_url, True)
    try:
        r = post(api, alice, room, body="while the database says no", ref="r-503")
        body = refused(r, 503, "unavailable")
        assert body["retry_after"] > 0 and int(r.headers["Retry-After"]) >= 1
        assert all_messages(api, alice, room) == []
    finally:
        await refuse_inserts(server.database_url, False)
    again = post(api, alice, room, body="while the database says no", ref="r-503")
    assert again.status_code == 201, again.text
    assert post(api, alice, room, body="while the database says no", ref="r-503").status_code == 200
    assert [m["body"] for m in all_messages(api, alice, room)] == ["while the database says no"]
    api.close()


@pytest.mark.one_backend
async def test_a_full_write_queue_is_a_503_at_once_and_what_was_taken_lands(
    make_server: Servers,
) -> None:
    server = make_server(write_queue_max=3, send_rate=1000, send_burst=1000)
    api = Api(server)
    alice = api.user()
    room = api.room(alice)
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:

        async def send(i: int) -> httpx.Response:
            payload = {"body": f"stalled {i}", "ref": f"q{i}"}
            url = f"/api/rooms/{room}/messages"
            return await client.post(url, json=payload, headers=alice.headers)

        async with writes_stalled(server.database_url):
            pending = [asyncio.create_task(send(i)) for i in range(12)]
            done, _ = await asyncio.wait(pending, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            early = [task.result() for task in done]
            assert early, "no send was refused while the writer was stalled"
            for r in early:  # refused at once, without waiting for the database
                refused(r, 503, "overloaded")
                assert int(r.headers["Retry-After"]) >= 1
        answers = await asyncio.gather(*pending)
    taken = sorted(r.json()["ref"] for r in answers if r.status_code == 201)
    others = [r for r in answers if r.status_code != 201]
    assert taken and all(r.json()["code"] == "overloaded" for r in others), others
    stored = all_messages(api, alice, room)
    assert sorted(f"q{m['body'].split()[-1]}" for m in stored) == taken
    api.close()
