"""Accounts and tokens over HTTP and at the WebSocket handshake, against a real server."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest
from jose import jwt
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.harness import TEST_SECRET, Api, Server, ServerProcess, connect, nodes, recv


def forge(**overrides: Any) -> str:
    """A token signed with the server's own key, with claims overridden or removed."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "1",
        "iat": now,
        "nbf": now - 1,
        "exp": now + 600,
        "jti": "x" * 32,
        "iss": "chat",
        "aud": "chat",
        "typ": "access",
        "role": "admin",
        "ver": 0,
    }
    for key, value in overrides.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def me_status(api: Api, token: str) -> int:
    return api.client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code


def test_register_login_me(api: Api) -> None:
    alice = api.user()
    r = api.client.get("/api/me", headers=alice.headers)
    assert r.status_code == 200
    assert r.json() == {
        "id": alice.id,
        "username": alice.name,
        "name": alice.name,
        "role": "user",
        "display_name": None,
    }


def test_register_rejects_duplicates_and_lookalikes(api: Api) -> None:
    alice = api.user()
    fullwidth = chr(ord(alice.name[0]) + 0xFEE0) + alice.name[1:]  # NFKC folds it back
    for name in (alice.name, alice.name.upper(), fullwidth):
        r = api.client.post("/api/auth/register", json={"username": name, "password": "x" * 10})
        assert r.status_code in (409, 422), (name, r.text)
    zero_width = alice.name[:2] + "\u200b" + alice.name[2:]
    r = api.client.post("/api/auth/register", json={"username": zero_width, "password": "x" * 10})
    assert r.status_code == 422
    assert "letters, digits" in r.json()["detail"]


@pytest.mark.parametrize(
    ("username", "password", "why"),
    [("ab", "long enough", "3 to 32"), ("ok_name", "short", "password"), ("a b c", "x" * 9, "")],
)
def test_register_bad_input(api: Api, username: str, password: str, why: str) -> None:
    r = api.client.post("/api/auth/register", json={"username": username, "password": password})
    assert r.status_code == 422
    assert why in str(r.json()["detail"])


def test_wrong_password_and_unknown_user_look_the_same(api: Api) -> None:
    alice = api.user()
    wrong = api.client.post(
        "/api/auth/token", data={"username": alice.name, "password": "not it at all"}
    )
    unknown = api.client.post(
        "/api/auth/token", data={"username": "nobody_here_xyz", "password": "whatever1"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_token_response_shape(api: Api) -> None:
    alice = api.user()
    data = api.login(alice.name, alice.password)
    assert data["token_type"] == "bearer"
    assert data["expires_in"] == 900
    assert data["access_token"] and data["refresh_token"]


def test_refresh_rotates_and_reuse_revokes_family(api: Api) -> None:
    alice = api.user()
    first = api.client.post("/api/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert first.status_code == 200
    pair = first.json()
    assert me_status(api, pair["access_token"]) == 200
    # The old refresh token works once only; reusing it kills the new one too.
    again = api.client.post("/api/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert again.status_code == 401
    stolen = api.client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert stolen.status_code == 401


def test_logout_revokes_access_and_refresh(api: Api) -> None:
    alice = api.user()
    assert api.client.post("/api/auth/logout", headers=alice.headers).status_code == 204
    assert me_status(api, alice.token) == 401
    r = api.client.post("/api/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert r.status_code == 401
    # Signing in again works and gives live tokens.
    fresh = api.login(alice.name, alice.password)
    assert me_status(api, fresh["access_token"]) == 200


def test_refresh_token_is_not_an_access_token(api: Api) -> None:
    alice = api.user()
    assert me_status(api, alice.refresh_token) == 401


def test_access_token_is_not_a_refresh_token(api: Api) -> None:
    alice = api.user()
    r = api.client.post("/api/auth/refresh", json={"refresh_token": alice.token})
    assert r.status_code == 401


def attack_tokens(api: Api) -> dict[str, str]:
    victim = api.user()
    header_none = b64({"alg": "none", "typ": "JWT"})
    now = int(time.time())
    payload = {
        "sub": str(victim.id),
        "iat": now,
        "nbf": now - 1,
        "exp": now + 600,
        "jti": "a" * 32,
        "iss": "chat",
        "aud": "chat",
        "typ": "access",
        "role": "admin",
        "ver": 0,
    }
    head, body, sig = victim.token.split(".")
    tampered_body = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    tampered_body["role"] = "admin"
    return {
        "alg none": f"{header_none}.{b64(payload)}.",
        "wrong key": jwt.encode(payload, "another-secret-" + "y" * 30, algorithm="HS256"),
        "tampered payload": f"{head}.{b64(tampered_body)}.{sig}",
        "expired": forge(sub=str(victim.id), exp=now - 10, iat=now - 1000, nbf=now - 1000),
        "missing exp": forge(sub=str(victim.id), exp=None),
        "missing sub": forge(sub=None),
        "missing aud": forge(sub=str(victim.id), aud=None),
        "refresh as access": victim.refresh_token,
        "HS512 instead of HS256": jwt.encode(payload, TEST_SECRET, algorithm="HS512"),
        "garbage": "not.a.token",
        "2 MB": "a" * 2_000_000,
    }


def test_attack_tokens_refused_over_http(api: Api) -> None:
    for name, token in attack_tokens(api).items():
        if name == "2 MB":
            continue  # too big for an HTTP header line; covered over the socket
        assert me_status(api, token) == 401, name


async def test_attack_tokens_refused_at_handshake(server: ServerProcess, api: Api) -> None:
    for name, token in attack_tokens(api).items():
        if name == "2 MB":
            continue
        with pytest.raises(InvalidStatus) as refused:
            await connect(server, token)
        assert refused.value.response.status_code == 403, name


async def test_attack_tokens_refused_in_auth_frame(server: ServerProcess, api: Api) -> None:
    for name, token in attack_tokens(api).items():
        ws = await connect(server, max_size=None)
        with pytest.raises(ConnectionClosed):
            # The 2 MB frame may be refused (1009) before the client has finished
            # writing it: then the send itself sees the close.
            await ws.send(json.dumps({"type": "auth", "token": token}))
            await recv(ws)
        assert ws.close_code in (1008, 1009), name


async def test_revoked_token_refused_at_handshake(server: ServerProcess, api: Api) -> None:
    alice = api.user()
    api.client.post("/api/auth/logout", headers=alice.headers)
    with pytest.raises(InvalidStatus):
        await connect(server, alice.token)


async def test_bot_token_works_until_revoked(server: ServerProcess, api: Api) -> None:
    admin = api.admin()
    bot = api.bot(admin)
    ws = await connect(server, bot.token)
    assert me_status(api, bot.token) == 200
    r = api.client.delete(f"/api/bots/{bot.id}", headers=admin.headers)
    assert r.status_code == 204
    with pytest.raises(ConnectionClosed):
        while True:
            await recv(ws)
    assert ws.close_code == 4003
    with pytest.raises(InvalidStatus):
        await connect(server, bot.token)


def test_bots_admin_only(api: Api) -> None:
    alice = api.user()
    r = api.client.post("/api/bots", json={"name": "sneaky_bot"}, headers=alice.headers)
    assert r.status_code == 403


def test_endpoints_need_a_token(api: Api) -> None:
    for method, path in [
        ("GET", "/api/me"),
        ("GET", "/api/rooms"),
        ("POST", "/api/rooms"),
        ("GET", "/api/rooms/x/messages"),
        ("POST", "/api/auth/logout"),
    ]:
        r = api.client.request(method, path)
        assert r.status_code == 401, path
        assert "detail" in r.json()


def test_registration_can_be_disabled(make_server: Any) -> None:
    server = make_server(registration_enabled="false")
    local = Api(server)
    r = local.client.post("/api/auth/register", json={"username": "someone", "password": "x" * 9})
    assert r.status_code == 403
    local.close()


def test_registrations_per_address_are_limited(make_server: Any) -> None:
    server = make_server(registrations_per_ip=3, registration_window=120)
    local = Api(server)
    first = local.user()  # 1
    taken = local.client.post(  # 2: a refused attempt counts too
        "/api/auth/register", json={"username": first.name, "password": "x" * 12}
    )
    assert taken.status_code == 409
    local.user()  # 3
    r = local.client.post("/api/auth/register", json={"username": "late_one", "password": "x" * 12})
    assert r.status_code == 429, r.text
    assert 1 <= int(r.headers["Retry-After"]) <= 120
    assert "registrations" in r.json()["detail"]
    # Nothing was created, and signing in is not affected.
    assert (
        local.client.post(
            "/api/auth/token", data={"username": "late_one", "password": "x" * 12}
        ).status_code
        == 401
    )
    assert local.login(first.name, first.password)["access_token"]
    local.close()


def test_cli_users_and_bots(server: ServerProcess, api: Api) -> None:
    done = server.cli("users", "create", "cli_user_1", "--password-stdin", stdin="pass phrase 1\n")
    assert done.returncode == 0, done.stderr
    assert api.login("cli_user_1", "pass phrase 1")["access_token"]
    dup = server.cli("users", "create", "cli_user_1", "--password-stdin", stdin="pass phrase 1\n")
    assert dup.returncode != 0
    assert "taken" in dup.stderr
    bot = server.cli("bots", "create", "cli_bot_1")
    assert bot.returncode == 0, bot.stderr
    token = bot.stdout.strip().splitlines()[-1]
    assert (
        api.client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()["role"]
        == "bot"
    )


def test_concurrent_refreshes_with_one_token_yield_one_pair(api: Api) -> None:
    from concurrent.futures import ThreadPoolExecutor

    alice = api.user()

    def attempt(_: int) -> int:
        with httpx.Client(base_url=api.server.http, timeout=10) as client:
            r = client.post("/api/auth/refresh", json={"refresh_token": alice.refresh_token})
            return r.status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(attempt, range(8)))
    assert codes.count(200) == 1, codes


async def test_a_token_issued_after_a_logout_works_on_every_process_at_once(
    server: Server, api: Api
) -> None:
    """Each process caches users' token facts for 2 s; a token newer than the cached
    row (signed in again right after a logout elsewhere) must not be refused."""
    alice = api.user()
    for node in nodes(server):  # every process has read (and cached) alice's row
        await (await connect(node, alice.token)).close()
    r = api.client.post("/api/auth/logout", headers=alice.headers)
    assert r.status_code == 204
    fresh = api.login(alice.name, "correct horse")["access_token"]
    for node in nodes(server):
        ws = await connect(node, fresh)  # reads `hello`: accepted at once
        await ws.close()
        with pytest.raises(InvalidStatus):  # and the old token is dead everywhere
            await connect(node, alice.token)
