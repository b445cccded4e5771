"""Operations: health, readiness, metrics, the development secret, and logs free of secrets."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.harness import Api, ServerProcess, connect, join, one_node, say


def test_health_and_readiness(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


async def test_metrics_count_connections_and_messages(server: ServerProcess, api: Api) -> None:
    alice = api.user()
    room = api.room(alice)
    node = one_node(server)  # metrics are per process (several workers: docs/operations.md)
    ws = await connect(node, alice.token)
    await join(ws, room)
    await say(ws, room, "counted")
    text = httpx.get(f"{node.http}/metrics").text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples["chat_connections"] >= 1
    assert samples["chat_messages_total"] >= 1
    await ws.close()


def test_pages_carry_a_strict_csp(api: Api) -> None:
    for path in ("/", "/admin"):
        r = api.client.get(path)
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"


def test_dev_secret_is_generated_once_and_kept(make_server: Any, tmp_path: Path) -> None:
    database = tmp_path / "data" / "chat.db"  # the embedded default: SQLite on disk
    server: ServerProcess = make_server(f"sqlite+aiosqlite:///{database}", jwt_secret=None)
    secret = database.parent / "chat-jwt.secret"
    assert secret.exists(), "no generated secret beside the database"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "generated a development secret" in server.log()
    api = Api(server)
    alice = api.user()
    server.restart()
    # Tokens signed before the restart still verify: the same secret was reused.
    assert api.client.get("/api/me", headers=alice.headers).status_code == 200
    api.close()


def test_production_refuses_a_missing_secret(make_server: Any) -> None:
    with pytest.raises(RuntimeError, match="exited early"):
        make_server(jwt_secret=None, environment="production")


async def test_logs_never_hold_tokens_or_passwords(make_server: Any) -> None:
    server: ServerProcess = make_server()
    api = Api(server)
    alice = api.user(password="a very secret pass")
    refreshed = api.client.post(
        "/api/auth/refresh", json={"refresh_token": alice.refresh_token}
    ).json()
    ws = await connect(server, alice.token)
    await ws.close()
    ws = await connect(server, alice.token, frame_auth=True)
    await ws.close()
    with pytest.raises(InvalidStatus):
        await connect(server, alice.token + "tampered")
    httpx.post(
        f"{server.http}/api/auth/token",
        data={"username": alice.name, "password": "wrong password!"},
    )
    api.client.post("/api/auth/logout", headers=alice.headers)
    log = server.log()
    assert "WebSocket /ws" in log  # the log is really there
    for secret in (
        alice.token,
        alice.refresh_token,
        refreshed["access_token"],
        "a very secret pass",
        "wrong password!",
    ):
        assert secret not in log
        assert secret[:40] not in log
    api.close()
