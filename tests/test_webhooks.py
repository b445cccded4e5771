"""Outgoing webhooks end to end: a real receiver (`tests.webhook_receiver`) on a free
port, real servers. Signatures, the three events, order and retries, disabling,
the outbox bound, the SSRF rule, ack latency with a hanging receiver, restarts,
and two processes sharing the outbox."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chat_client.webhooks import sign, verify
from tests.conftest import Servers
from tests.harness import Account, Api, Server, connect, join, say
from tests.webhook_receiver import Receiver

SETTINGS: dict[str, Any] = {
    "webhooks_allow_private": 1,
    "webhook_backoff_base": 0.05,
    "webhook_backoff_max": 0.2,
    "webhook_max_failures": 6,
    "webhook_timeout": 1.0,
    "webhook_outbox_max": 20,
    "webhook_poll_interval": 0.2,
    "webhook_refresh_interval": 0.5,
    "send_rate": 200,
    "send_burst": 400,
}


@pytest.fixture(scope="module")
def wserver(module_servers: Servers) -> Server:
    server: Server = module_servers(**SETTINGS)
    return server


@pytest.fixture(scope="module")
def wapi(wserver: Server) -> Iterator[Api]:
    client = Api(wserver)
    yield client
    client.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def register(api: Api, admin: Account, **body: Any) -> httpx.Response:
    return api.client.post("/api/webhooks", json=body, headers=admin.headers)


def registered(api: Api, admin: Account, **body: Any) -> dict[str, Any]:
    r = register(api, admin, **body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def deliveries(api: Api, admin: Account, hook: dict[str, Any]) -> dict[str, Any]:
    r = api.client.get(f"/api/webhooks/{hook['id']}/deliveries?limit=200", headers=admin.headers)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def say_all(server: Server, who: Account, room: str, bodies: list[str]) -> None:
    ws = await connect(server, who.token)
    try:
        await join(ws, room)
        for body in bodies:
            await say(ws, room, body)
    finally:
        await ws.close()


async def test_signed_deliveries_of_mentions_dms_and_room_messages(
    wserver: Server, wapi: Api, receiver: Receiver
) -> None:
    admin, alice = wapi.admin(), wapi.user()
    bot = wapi.bot(admin)
    watched, other = wapi.room(admin), wapi.room(admin)
    hook = registered(
        wapi, admin, bot=bot.name, url=receiver.url, events=["mention", "dm", "message"],
        rooms=[watched],
    )  # fmt: skip
    secret = hook.pop("secret")
    assert len(secret) == 64
    assert hook["state"] == "active" and hook["rooms"] == [watched]
    dm = wapi.client.post("/api/dms", json={"username": bot.name}, headers=alice.headers)
    assert dm.status_code == 201, dm.text
    await say_all(wserver, alice, other, [f"hello @{bot.name}", "no mention here"])
    await say_all(wserver, alice, dm.json()["name"], ["a private word"])
    await say_all(wserver, alice, watched, ["every message here"])
    receiver.wait(lambda r: len(r.accepted) >= 3)
    got = {b["event"]: b for b in receiver.bodies()}
    assert set(got) == {"mention", "dm", "message"}
    assert got["mention"]["message"]["body"] == f"hello @{bot.name}"
    assert got["mention"]["message"]["room"] == other
    assert got["dm"]["message"]["body"] == "a private word"
    assert got["message"]["message"]["room"] == watched
    for body in got.values():
        assert body["bot"] == {"id": bot.id, "name": bot.name}
        assert body["webhook"] == hook["id"]
        assert body["message"]["user"]["name"] == alice.name
    for received in receiver.accepted.values():
        header = received.headers["x-chat-signature"]
        assert verify(secret, received.body, header)
        assert header == sign(secret, received.body)
        assert not verify("another secret", received.body, header)
        assert not verify(secret, received.body + b" ", header)
        assert received.headers["x-chat-delivery"] == received.json["id"]
        assert abs(int(received.headers["x-chat-timestamp"]) - time.time()) < 60
        assert received.headers["content-type"] == "application/json"
    # The secret is shown once: never in the list or the deliveries.
    listed = wapi.client.get("/api/webhooks", headers=admin.headers).json()["items"]
    mine = next(h for h in listed if h["id"] == hook["id"])
    assert "secret" not in mine and secret not in str(listed)
    log = deliveries(wapi, admin, hook)
    assert {i["status"] for i in log["items"]} == {"delivered"}
    assert {i["event"] for i in log["items"]} == {"mention", "dm", "message"}
    assert secret not in str(log)
    # A message the bot sends itself is never sent to its own webhook.
    await say_all(wserver, bot, watched, ["the bot speaks"])
    await say_all(wserver, alice, watched, ["after the bot"])
    receiver.wait(lambda r: len(r.accepted) >= 4)
    assert [b["message"]["body"] for b in receiver.bodies()][3:] == ["after the bot"]


async def test_failing_receiver_gets_everything_in_order_once(wserver: Server, wapi: Api) -> None:
    receiver = Receiver(fail_first=3)
    try:
        admin = wapi.admin()
        bot = wapi.bot(admin)
        rooms = [wapi.room(admin), wapi.room(admin)]
        hook = registered(
            wapi, admin, bot=bot.name, url=receiver.url, events=["message"], rooms=rooms
        )
        for room in rooms:
            await say_all(wserver, admin, room, [f"{room} {n}" for n in range(8)])
        receiver.wait(lambda r: len(r.accepted) == 16)
        for room in rooms:
            seqs = [b["message"]["seq"] for b in receiver.bodies() if b["message"]["room"] == room]
            assert seqs == list(range(1, 9)), seqs  # in order per room, each once
        assert receiver.duplicates == 0
        log = deliveries(wapi, admin, hook)["items"]
        failed = [i for i in log if i["status"] == "failed"]
        assert len(failed) == 3 and {i["http_status"] for i in failed} == {500}
        assert all(i["error"] == "HTTP 500" for i in failed)
        retried = {i["delivery"] for i in failed}
        assert all(
            any(i["status"] == "delivered" and i["attempt"] > 1 for i in log if i["delivery"] == d)
            for d in retried
        )
        state = deliveries(wapi, admin, hook)["webhook"]
        assert state["state"] == "active" and state["failures"] == 0 and state["pending"] == 0
    finally:
        receiver.close()


async def test_dead_receiver_is_disabled_with_an_alert(wserver: Server, wapi: Api) -> None:
    receiver = Receiver(failing=True)
    try:
        admin = wapi.admin()
        bot = wapi.bot(admin)
        room = wapi.room(admin)
        hook = registered(
            wapi, admin, bot=bot.name, url=receiver.url, events=["message"], rooms=[room]
        )
        await say_all(wserver, admin, room, ["one", "two"])
        deadline = time.monotonic() + 15
        while deliveries(wapi, admin, hook)["webhook"]["state"] != "disabled":
            assert time.monotonic() < deadline, "never disabled"
            await asyncio.sleep(0.1)
        found = deliveries(wapi, admin, hook)
        assert found["webhook"]["failures"] == SETTINGS["webhook_max_failures"]
        assert "6 failed deliveries in a row" in found["webhook"]["disabled_reason"]
        assert found["webhook"]["pending"] == 2  # kept, not dropped: enable sends them
        assert [i["status"] for i in found["items"]] == ["failed"] * 6
        # Only the room's first message was tried: the second waits behind it.
        assert {i["seq"] for i in found["items"]} == {1}
        alerts = wapi.client.get("/api/alerts", headers=admin.headers).json()["items"]
        assert any(f"webhook {hook['id']} disabled" in a["text"] for a in alerts)
        tried = len(receiver.requests)
        await asyncio.sleep(0.5)
        assert len(receiver.requests) == tried  # disabled: nothing more is sent
        # The endpoint recovers; enabling the webhook sends what waited, in order.
        receiver.failing = False
        r = wapi.client.post(f"/api/webhooks/{hook['id']}/enable", headers=admin.headers)
        assert r.status_code == 200 and r.json()["state"] == "active"
        receiver.wait(lambda rc: len(rc.accepted) == 2)
        assert [b["message"]["body"] for b in receiver.bodies()] == ["one", "two"]
    finally:
        receiver.close()


async def test_a_full_outbox_drops_new_events_with_an_alert(wserver: Server, wapi: Api) -> None:
    receiver = Receiver(hang=3)  # over the 1 s timeout: the first delivery holds the room
    try:
        admin = wapi.admin()
        bot = wapi.bot(admin)
        room = wapi.room(admin)
        hook = registered(
            wapi, admin, bot=bot.name, url=receiver.url, events=["message"], rooms=[room]
        )
        await say_all(wserver, admin, room, [f"m{n}" for n in range(25)])
        log = deliveries(wapi, admin, hook)
        dropped = [i for i in log["items"] if i["status"] == "dropped"]
        assert [i["seq"] for i in sorted(dropped, key=lambda i: i["seq"])] == list(range(21, 26))
        assert "20 deliveries already waiting" in dropped[0]["error"]
        assert log["webhook"]["pending"] == 20
        deadline = time.monotonic() + 10
        while True:
            alerts = wapi.client.get("/api/alerts", headers=admin.headers).json()["items"]
            # One alert per window: its count is what was refused by the time it was raised.
            said = f"webhook {hook['id']}: "
            if any(a["text"].startswith(said) and "events not queued" in a["text"] for a in alerts):
                break
            assert time.monotonic() < deadline, alerts[:3]
            await asyncio.sleep(0.1)
        wapi.client.delete(f"/api/webhooks/{hook['id']}", headers=admin.headers)
    finally:
        receiver.close()


async def test_a_hanging_receiver_does_not_slow_acks(wserver: Server, wapi: Api) -> None:
    admin = wapi.admin()
    room = wapi.room(admin)

    async def ack_latency() -> float:
        ws = await connect(wserver, admin.token)
        try:
            await join(ws, room)
            started = time.perf_counter()
            for n in range(30):
                await say(ws, room, f"timed {n}")
            return (time.perf_counter() - started) / 30
        finally:
            await ws.close()

    without = await ack_latency()
    receiver = Receiver(hang=5)
    try:
        bot = wapi.bot(admin)
        hook = registered(
            wapi, admin, bot=bot.name, url=receiver.url, events=["message"], rooms=[room]
        )
        receiver_busy = await ack_latency()
        assert receiver.requests, "the hanging receiver was called"
        # Generous bound: 2 cores shared with other tests; a hanging receiver would
        # add its 1 s timeout (or its 5 s hang) to each ack if delivery were inline.
        assert receiver_busy < max(4 * without, without + 0.05), (without, receiver_busy)
        wapi.client.delete(f"/api/webhooks/{hook['id']}", headers=admin.headers)
    finally:
        receiver.close()


def test_registration_is_checked(wapi: Api) -> None:
    admin, user = wapi.admin(), wapi.user()
    bot = wapi.bot(admin)
    room = wapi.room(admin)
    private = wapi.room(admin, private=True)
    url = "http://127.0.0.1:9/hook"
    cases: list[tuple[dict[str, Any], int, str | None]] = [
        ({"bot": bot.name, "url": url, "events": ["message"]}, 422, "bad_rooms"),
        ({"bot": bot.name, "url": url, "events": ["dm"], "rooms": [room]}, 422, "bad_rooms"),
        ({"bot": bot.name, "url": url, "events": ["nope"]}, 422, None),
        ({"bot": bot.name, "url": url, "events": []}, 422, None),
        ({"bot": bot.name, "url": "ftp://example.com/x", "events": ["dm"]}, 422, "bad_url"),
        ({"bot": bot.name, "url": "http://" + "a" * 2000, "events": ["dm"]}, 422, None),
        ({"bot": bot.name, "url": "http://u:p@example.com/", "events": ["dm"]}, 422, "bad_url"),
        ({"bot": bot.name, "url": "not a url", "events": ["dm"]}, 422, "bad_url"),
        ({"bot": user.name, "url": url, "events": ["dm"]}, 404, "not_found"),
        ({"bot": "nobody_here", "url": url, "events": ["dm"]}, 404, "not_found"),
        (
            {"bot": bot.name, "url": url, "events": ["message"], "rooms": [private]},
            422,
            "bot_cannot_read",
        ),
        (
            {"bot": bot.name, "url": url, "events": ["message"], "rooms": ["no-such-room"]},
            404,
            "not_found",
        ),
        ({"bot": bot.name, "url": url, "events": ["dm"], "extra": 1}, 422, None),
    ]
    for body, status, code in cases:
        r = register(wapi, admin, **body)
        assert r.status_code == status, (body, r.text)
        if code is not None:
            assert r.json()["code"] == code, (body, r.text)
    assert register(wapi, user, bot=bot.name, url=url, events=["dm"]).status_code == 403
    assert wapi.client.get("/api/webhooks", headers=user.headers).status_code == 403
    assert wapi.client.delete("/api/webhooks/999999", headers=admin.headers).status_code == 404
    r = wapi.client.get("/api/webhooks/999999/deliveries", headers=admin.headers)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    # A member bot may watch a private room; listing and removal.
    wapi.client.post(f"/api/rooms/{private}/members", json={"username": bot.name},
                     headers=admin.headers)  # fmt: skip
    hook = registered(wapi, admin, bot=bot.name, url=url, events=["message", "message"],
                      rooms=[private, room])  # fmt: skip
    assert hook["events"] == ["message"] and sorted(hook["rooms"]) == sorted([private, room])
    r = wapi.client.delete(f"/api/webhooks/{hook['id']}", headers=admin.headers)
    assert r.status_code == 204
    listed = wapi.client.get("/api/webhooks", headers=admin.headers).json()["items"]
    assert hook["id"] not in [h["id"] for h in listed]


@pytest.mark.one_backend
def test_private_addresses_are_refused_by_default(make_process: Servers) -> None:
    server = make_process()
    api = Api(server)
    try:
        admin = api.admin()
        bot = api.bot(admin)
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://10.1.2.3/hook",
            "http://192.168.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:8080/hook",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "http://224.0.0.1/",
            "http://localhost:8080/hook",
        ]:
            r = register(api, admin, bot=bot.name, url=url, events=["dm"])
            assert r.status_code == 422, (url, r.text)
            assert r.json()["code"] == "private_address", (url, r.text)
            assert "CHAT_WEBHOOKS_ALLOW_PRIVATE" in r.json()["detail"]
        assert api.client.get("/api/webhooks", headers=admin.headers).json()["items"] == []
    finally:
        api.close()


async def test_deliveries_wait_in_the_outbox_across_a_restart(make_server: Servers) -> None:
    server = make_server(**SETTINGS | {"webhook_max_failures": 1000})
    api = Api(server)
    receiver = Receiver(failing=True)
    try:
        admin = api.admin()
        bot = api.bot(admin)
        room = api.room(admin)
        hook = registered(api, admin, bot=bot.name, url=receiver.url, events=["message"],
                          rooms=[room])  # fmt: skip
        await say_all(server, admin, room, [f"kept {n}" for n in range(5)])
        receiver.wait(lambda r: len(r.requests) >= 2)  # tried, failed, waiting
        server.stop()
        receiver.failing = False
        server.start()
        receiver.wait(lambda r: len(r.accepted) == 5)
        assert [b["message"]["body"] for b in receiver.bodies()] == [f"kept {n}" for n in range(5)]
        assert receiver.duplicates == 0
        assert deliveries(api, admin, hook)["webhook"]["pending"] == 0
    finally:
        receiver.close()
        api.close()


@pytest.mark.two_nodes
async def test_two_processes_deliver_each_event_once(wserver: Server, wapi: Api) -> None:
    receiver = Receiver()
    try:
        admin = wapi.admin()
        bot = wapi.bot(admin)
        rooms = [wapi.room(admin) for _ in range(3)]
        registered(wapi, admin, bot=bot.name, url=receiver.url, events=["message"], rooms=rooms)
        # Sends go to both processes (connections alternate between them); 18 in all,
        # under the outbox bound of 20.
        await asyncio.gather(
            *(say_all(wserver, admin, room, [f"{room} {n}" for n in range(3)]) for room in rooms),
            *(say_all(wserver, admin, room, [f"{room} b{n}" for n in range(3)]) for room in rooms),
        )
        receiver.wait(lambda r: len(r.accepted) == 18)
        await asyncio.sleep(0.5)  # a double delivery would show up by now
        assert len(receiver.requests) == 18 and receiver.duplicates == 0
        for room in rooms:
            seqs = [b["message"]["seq"] for b in receiver.bodies() if b["message"]["room"] == room]
            assert seqs == list(range(1, 7))
    finally:
        receiver.close()


@pytest.mark.one_backend
def test_client_verify_rejects_what_is_not_signed_with_the_secret() -> None:
    body = b'{"id":"x","event":"dm"}'
    header = sign("s3cret", body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify("s3cret", body, header)
    assert not verify("s3cret", body, None)
    assert not verify("s3cret", body, "")
    assert not verify("s3cret", body, header.removeprefix("sha256="))
    assert not verify("s3cret", body, header[:-1] + ("0" if header[-1] != "0" else "1"))
    assert not verify("s3cret", body, "sha256=é")
