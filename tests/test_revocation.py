"""Tokens on open connections: expiry closes with 4001 unless refreshed in time; logout,
password change, kick, ban and bot revocation close every socket of that user with 4003
within 2 seconds, on every connection, and nobody else's."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from jose import jwt
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ServerFactory
from tests.harness import Account, Api, ServerProcess, connect, join, recv, recv_until

TTL = 4  # JWT `exp` is whole seconds: a token lives between TTL - 1 and TTL seconds
REVOKE_WITHIN = 2.0


@pytest.fixture(scope="module")
def short(module_servers: ServerFactory) -> ServerProcess:
    """A server whose access tokens live a few seconds."""
    return module_servers(access_token_ttl=TTL)


@pytest.fixture(scope="module")
def short_api(short: ServerProcess) -> Iterator[Api]:
    client = Api(short)
    yield client
    client.close()


async def closed_code(ws: ClientConnection, within: float) -> tuple[int | None, float]:
    """Read until the server closes; (close code, seconds it took)."""
    started = time.monotonic()
    with pytest.raises(ConnectionClosed):
        while True:
            await recv(ws, within + 1)
    return ws.close_code, time.monotonic() - started


async def sockets_of(server: ServerProcess, account: Account, room: str) -> list[ClientConnection]:
    """Two sockets of one user: one authenticated by header, one by an `auth` frame."""
    socks = [
        await connect(server, account.token),
        await connect(server, account.token, frame_auth=True),
    ]
    for ws in socks:
        await join(ws, room)
    return socks


async def assert_revoked(socks: list[ClientConnection], reason: str) -> None:
    results = await asyncio.gather(*(closed_code(ws, REVOKE_WITHIN) for ws in socks))
    print(f"\n{reason}: sockets closed in {', '.join(f'{t * 1000:.0f} ms' for _, t in results)}")
    for code, took in results:
        assert code == 4003, (reason, code)
        assert took <= REVOKE_WITHIN, (reason, took)
    for ws in socks:
        assert ws.close_reason, "the close says why"


async def still_open(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "ping", "ref": "alive"}))
    assert (await recv_until(ws, "pong"))["ref"] == "alive"


# --- expiry -------------------------------------------------------------------------------


def expires_at(token: str) -> float:
    return float(jwt.get_unverified_claims(token)["exp"])


async def test_expired_token_closes_with_4001(short: ServerProcess, short_api: Api) -> None:
    alice = short_api.user()
    ws = await connect(short, alice.token)
    code, _ = await closed_code(ws, TTL + 1)
    assert code == 4001
    assert abs(time.time() - expires_at(alice.token)) < 0.5, "closed when the token expired"
    assert "refresh" in (ws.close_reason or "")
    with pytest.raises(InvalidStatus):  # and the expired token opens nothing new
        await connect(short, alice.token)


async def test_fresh_auth_frame_before_expiry_keeps_the_connection(
    short: ServerProcess, short_api: Api
) -> None:
    alice = short_api.user()
    ws = await connect(short, alice.token, frame_auth=True)
    first_expiry = expires_at(alice.token)
    await asyncio.sleep(max(0.0, first_expiry - time.time() - 1.5))
    pair = short_api.client.post("/api/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert pair.status_code == 200
    await ws.send(json.dumps({"type": "auth", "token": pair.json()["access_token"], "ref": "re"}))
    reauthed = await recv_until(ws, "reauthed")
    assert reauthed["ref"] == "re" and reauthed["expires_at"]
    second_expiry = expires_at(pair.json()["access_token"])
    assert second_expiry > first_expiry + 1
    await asyncio.sleep(max(0.0, first_expiry - time.time()) + 0.5)
    await still_open(ws)  # past the first token's expiry
    code, _ = await closed_code(ws, TTL + 1)  # until the second one's
    assert code == 4001
    assert abs(time.time() - second_expiry) < 0.5


async def test_bad_auth_frame_on_open_connection_is_refused_and_changes_nothing(
    short: ServerProcess, short_api: Api
) -> None:
    alice, bob = short_api.user(), short_api.user()
    ws = await connect(short, alice.token)
    for token in ("garbage", bob.token, alice.refresh_token):
        await ws.send(json.dumps({"type": "auth", "token": token, "ref": "bad"}))
        error = await recv_until(ws, "error", ref="bad")
        assert error["code"] == "forbidden"
    code, _ = await closed_code(ws, TTL + 1)  # the original expiry still applies
    assert code == 4001


# --- revocation ----------------------------------------------------------------------------


@pytest.fixture
def room(api: Api, admin: Account) -> str:
    return api.room(admin)


@pytest.fixture(scope="module")
def admin(api: Api) -> Account:
    return api.admin()


async def test_logout_closes_every_socket_of_the_user(
    server: ServerProcess, api: Api, room: str
) -> None:
    alice, bob = api.user(), api.user()
    socks = await sockets_of(server, alice, room)
    bystander = await connect(server, bob.token)
    assert api.client.post("/api/auth/logout", headers=alice.headers).status_code == 204
    await assert_revoked(socks, "logout")
    await still_open(bystander)
    await bystander.close()


async def test_password_change_closes_sockets_and_rotates_tokens(
    server: ServerProcess, api: Api, room: str
) -> None:
    alice = api.user()
    socks = await sockets_of(server, alice, room)
    wrong = api.client.post(
        "/api/auth/password",
        json={"old_password": "not it", "new_password": "a new password"},
        headers=alice.headers,
    )
    assert wrong.status_code == 403
    short_new = api.client.post(
        "/api/auth/password",
        json={"old_password": alice.password, "new_password": "short"},
        headers=alice.headers,
    )
    assert short_new.status_code == 422
    for ws in socks:
        await still_open(ws)  # refused changes changed nothing
    r = api.client.post(
        "/api/auth/password",
        json={"old_password": alice.password, "new_password": "a new password"},
        headers=alice.headers,
    )
    assert r.status_code == 200, r.text
    await assert_revoked(socks, "password change")
    fresh = r.json()
    assert api.client.get("/api/me", headers=alice.headers).status_code == 401
    refresh = api.client.post("/api/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert refresh.status_code == 401
    me = api.client.get("/api/me", headers={"Authorization": f"Bearer {fresh['access_token']}"})
    assert me.status_code == 200
    assert (
        api.client.post(
            "/api/auth/token", data={"username": alice.name, "password": alice.password}
        ).status_code
        == 401
    )
    assert api.login(alice.name, "a new password")["access_token"]
    ws = await connect(server, fresh["access_token"])
    await still_open(ws)
    await ws.close()


async def test_bots_have_no_password_to_change(
    server: ServerProcess, api: Api, admin: Account
) -> None:
    bot = api.bot(admin)
    r = api.client.post(
        "/api/auth/password",
        json={"old_password": "x" * 10, "new_password": "y" * 10},
        headers=bot.headers,
    )
    assert r.status_code == 403


@pytest.mark.parametrize("action", ["kick", "ban"])
async def test_admin_kick_and_ban_close_every_socket(
    server: ServerProcess, api: Api, admin: Account, room: str, action: str
) -> None:
    alice, bob = api.user(), api.user()
    socks = await sockets_of(server, alice, room)
    bystander = await connect(server, bob.token)
    r = api.client.post(f"/api/admin/users/{alice.name}/{action}", headers=admin.headers)
    assert r.status_code == 204
    await assert_revoked(socks, action)
    await still_open(bystander)
    with pytest.raises(InvalidStatus):
        await connect(server, alice.token)
    login = api.client.post(
        "/api/auth/token", data={"username": alice.name, "password": alice.password}
    )
    if action == "kick":
        assert login.status_code == 200  # kicked, not banned: signing in again works
    else:
        assert login.status_code == 401
        unban = api.client.post(f"/api/admin/users/{alice.name}/unban", headers=admin.headers)
        assert unban.status_code == 204
        assert api.login(alice.name, alice.password)["access_token"]
    await bystander.close()


async def test_bot_revocation_closes_every_bot_socket(
    server: ServerProcess, api: Api, admin: Account, room: str
) -> None:
    bot, other = api.bot(admin), api.bot(admin)
    socks = [await connect(server, bot.token) for _ in range(3)]
    for ws in socks:
        await join(ws, room)
    bystander = await connect(server, other.token)
    r = api.client.delete(f"/api/bots/{bot.id}", headers=admin.headers)
    assert r.status_code == 204
    await assert_revoked(socks, "bot revoked")
    await still_open(bystander)
    await bystander.close()


async def test_revoked_user_leaves_presence(
    server: ServerProcess, api: Api, admin: Account, room: str
) -> None:
    alice, watcher = api.user(), api.user()
    w = await connect(server, watcher.token)
    await join(w, room)
    socks = await sockets_of(server, alice, room)
    seen: dict[str, Any] = await recv_until(w, "presence", event="join")
    assert seen["user"]["name"] == alice.name
    api.client.post(f"/api/admin/users/{alice.name}/kick", headers=admin.headers)
    await assert_revoked(socks, "kick")
    left = await recv_until(w, "presence", timeout=10, event="leave")
    assert left["user"]["name"] == alice.name
    await w.close()
