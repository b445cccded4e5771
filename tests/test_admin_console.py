"""The admin console's API end to end: the audit log of every admin action, managing
users and bots, presence watched live over the WebSocket, the charts' samples and
the health view; and that none of it is open to anyone but admins."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import Servers
from tests.harness import Account, Api, Server, connect, recv_until, say, send, unique

SETTINGS: dict[str, Any] = {
    "presence_grace": 0,
    "stats_sample_interval": 0.5,
    "task_progress_interval": 0.1,
    "webhooks_allow_private": 1,
    "webhook_refresh_interval": 0.2,
}


@pytest.fixture(scope="module")
def cserver(module_servers: Servers) -> Server:
    server: Server = module_servers(**SETTINGS)
    return server


@pytest.fixture(scope="module")
def capi(cserver: Server) -> Iterator[Api]:
    client = Api(cserver)
    yield client
    client.close()


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json() if r.content else None


def audit(api: Api, admin: Account, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = ok(
        api.client.get("/api/admin/audit", params=params, headers=admin.headers)
    )["items"]
    return items


def wait_task(api: Api, who: Account, task_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        view: dict[str, Any] = ok(api.client.get(f"/api/tasks/{task_id}", headers=who.headers))
        if view["status"] in statuses:
            return view
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} never reached {statuses}")


def test_every_admin_action_is_in_the_audit_log(capi: Api) -> None:
    c = capi.client
    boss = capi.admin(unique("boss"))
    h = boss.headers
    owner, alice = capi.user(), capi.user()
    started = time.time()

    # Bots: create, rotate, revoke.
    bot = ok(c.post("/api/bots", json={"name": unique("bot")}, headers=h), 201)
    ok(c.post(f"/api/bots/{bot['id']}/rotate", headers=h))
    ok(c.delete(f"/api/bots/{bot['id']}", headers=h), 204)
    # Users: kick, ban, unban, disable, enable, role, password reset.
    for action in ("kick", "ban", "unban", "disable", "enable"):
        c.post(f"/api/admin/users/{alice.name}/{action}", headers=h).raise_for_status()
    ok(c.post(f"/api/admin/users/{alice.name}/role", json={"role": "admin"}, headers=h))
    ok(c.post(f"/api/admin/users/{alice.name}/password", headers=h))
    # Someone else's private room: add and remove a member, archive it.
    room = capi.room(owner, unique("priv"), private=True)
    ok(c.post(f"/api/rooms/{room}/members", json={"username": alice.name}, headers=h), 201)
    ok(c.delete(f"/api/rooms/{room}/members/{alice.name}", headers=h), 204)
    ok(c.patch(f"/api/rooms/{room}", json={"archived": True}, headers=h))
    # Tasks: a purge, and the cancel of a user's task.
    purge = ok(
        c.post(
            "/api/tasks", json={"kind": "purge", "params": {"older_than_days": 3650}}, headers=h
        ),
        202,
    )
    demo = ok(
        c.post(
            "/api/tasks",
            json={"kind": "demo", "params": {"steps": 100, "delay": 0.1}},
            headers=owner.headers,
        ),
        202,
    )
    ok(c.post(f"/api/tasks/{demo['id']}/cancel", headers=h))
    # Webhooks: register, enable, delete (of a bot of its own).
    hook_bot = capi.bot(boss)
    hook = ok(
        c.post(
            "/api/webhooks",
            json={"bot": hook_bot.name, "url": "http://127.0.0.1:9/hook", "events": ["dm"]},
            headers=h,
        ),
        201,
    )
    ok(c.post(f"/api/webhooks/{hook['id']}/enable", headers=h))
    ok(c.delete(f"/api/webhooks/{hook['id']}", headers=h), 204)
    # A notification sent by an admin.
    ok(
        c.post(
            "/api/notifications",
            json={"username": owner.name, "title": "maintenance", "body": "tonight"},
            headers=h,
        ),
        201,
    )

    rows = audit(capi, boss, actor=boss.name, limit=200)
    got = [(r["action"], r["target_kind"], r["target"]) for r in reversed(rows)]
    assert got == [
        ("bot.create", "bot", bot["name"]),
        ("bot.rotate", "bot", bot["name"]),
        ("bot.revoke", "bot", bot["name"]),
        ("user.kick", "user", alice.name),
        ("user.ban", "user", alice.name),
        ("user.unban", "user", alice.name),
        ("user.disable", "user", alice.name),
        ("user.enable", "user", alice.name),
        ("user.role", "user", alice.name),
        ("user.password_reset", "user", alice.name),
        ("room.member_add", "room", room),
        ("room.member_remove", "room", room),
        ("room.update", "room", room),
        ("task.purge", "task", purge["id"]),
        ("task.cancel", "task", demo["id"]),
        ("bot.create", "bot", hook_bot.name),
        ("webhook.create", "webhook", str(hook["id"])),
        ("webhook.enable", "webhook", str(hook["id"])),
        ("webhook.delete", "webhook", str(hook["id"])),
        ("notification.send", "user", owner.name),
    ]
    for row in rows:
        assert row["actor"] == {"id": boss.id, "name": boss.name}
        assert row["address"] == "127.0.0.1"
    by_action = {r["action"]: r for r in rows}
    assert by_action["user.role"]["detail"] == {"old": "user", "new": "admin"}
    assert by_action["room.member_add"]["detail"] == {"user": alice.name}
    assert by_action["task.purge"]["detail"]["params"]["older_than_days"] == 3650
    assert by_action["webhook.create"]["detail"]["url"] == "http://127.0.0.1:9/hook"
    # Secrets never reach the log: not the new password, not a token, not the hook's secret.
    text = str(rows)
    assert "token" not in text and "secret" not in text and "password'" not in text

    # Filters: an action family, one action, a target, a time window, pages.
    assert {r["action"] for r in audit(capi, boss, actor=boss.name, action="bot")} == {
        "bot.create",
        "bot.rotate",
        "bot.revoke",
    }
    assert [r["target"] for r in audit(capi, boss, action="user.ban", target=alice.name)] == [
        alice.name
    ]
    assert len(audit(capi, boss, target=alice.name)) == 7
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started - 1))
    assert len(audit(capi, boss, actor=boss.name, since=since)) == len(rows)
    assert audit(capi, boss, actor=boss.name, until=since) == []
    first = ok(c.get("/api/admin/audit", params={"actor": boss.name, "limit": 8}, headers=h))
    assert len(first["items"]) == 8 and first["next_before"] == first["items"][-1]["id"]
    rest = audit(capi, boss, actor=boss.name, before=first["next_before"], limit=200)
    assert [r["id"] for r in first["items"] + rest] == [r["id"] for r in rows]


def test_what_is_no_admin_action_is_not_in_the_log(capi: Api) -> None:
    boss = capi.admin(unique("watcher"))
    owner, friend = capi.user(), capi.user()
    room = capi.room(owner, unique("mine"), private=True)
    h = owner.headers
    ok(
        capi.client.post(f"/api/rooms/{room}/members", json={"username": friend.name}, headers=h),
        201,
    )
    ok(capi.client.patch(f"/api/rooms/{room}", json={"topic": "ours"}, headers=h))
    ok(capi.client.delete(f"/api/rooms/{room}/members/{friend.name}", headers=h), 204)
    assert audit(capi, boss, target=room) == []
    assert audit(capi, boss, actor=owner.name) == []


def test_only_admins_reach_the_console_api(capi: Api) -> None:
    boss = capi.admin(unique("boss"))
    user = capi.user()
    bot = capi.bot(boss)
    calls = [
        ("GET", "/api/admin/audit", None),
        ("GET", "/api/admin/users", None),
        ("GET", "/api/admin/stats", None),
        ("GET", "/api/admin/health", None),
        ("GET", "/api/admin/presence", None),
        ("GET", "/api/bots", None),
        ("POST", "/api/bots", {"name": unique("evil")}),
        ("POST", f"/api/bots/{bot.id}/rotate", None),
        ("DELETE", f"/api/bots/{bot.id}", None),
        ("POST", f"/api/admin/users/{boss.name}/role", {"role": "user"}),
        ("POST", f"/api/admin/users/{boss.name}/password", None),
        ("POST", f"/api/admin/users/{boss.name}/disable", None),
        ("POST", f"/api/admin/users/{boss.name}/enable", None),
        ("POST", f"/api/admin/users/{boss.name}/ban", None),
        ("POST", f"/api/admin/users/{boss.name}/unban", None),
        ("POST", f"/api/admin/users/{boss.name}/kick", None),
    ]
    for method, path, body in calls:
        for who in (user, bot):
            r = capi.client.request(method, path, json=body, headers=who.headers)
            assert r.status_code == 403, (who.role, method, path, r.text)
        assert capi.client.request(method, path, json=body).status_code == 401, path
    assert audit(capi, boss, target=boss.name) == []  # nothing happened
    assert capi.login(boss.name, boss.password)["access_token"]  # still an admin


async def test_disable_enable_role_and_password_reset(cserver: Server, capi: Api) -> None:
    c = capi.client
    boss = capi.admin(unique("boss"))
    h = boss.headers
    carol = capi.user(unique("carol"))

    # Search: by name prefix, role and state.
    found = ok(c.get("/api/admin/users", params={"q": carol.name[:8].upper()}, headers=h))
    assert carol.name in [u["name"] for u in found["items"]]
    admins = ok(c.get("/api/admin/users", params={"role": "admin", "limit": 100}, headers=h))
    assert boss.name in [u["name"] for u in admins["items"]]
    assert all(u["role"] == "admin" for u in admins["items"])

    # Disable: sockets close with 4003, sign-in and old tokens refused, search hides them.
    ws = await connect(cserver, carol.token)
    user = ok(c.post(f"/api/admin/users/{carol.name}/disable", headers=h))
    assert (user["state"], user["disabled"]) == ("disabled", True)
    assert await closed_with(ws) == 4003
    assert c.post(
        "/api/auth/token", data={"username": carol.name, "password": carol.password}
    ).status_code in (400, 401)
    assert c.get("/api/me", headers=carol.headers).status_code == 401
    assert (
        c.post("/api/auth/refresh", json={"refresh_token": carol.refresh_token}).status_code == 401
    )
    listed = ok(c.get("/api/users", params={"q": carol.name}, headers=boss.headers))["items"]
    assert listed == []
    disabled = ok(
        c.get("/api/admin/users", params={"state": "disabled", "q": carol.name}, headers=h)
    )
    assert [u["name"] for u in disabled["items"]] == [carol.name]
    assert ok(c.post(f"/api/admin/users/{carol.name}/enable", headers=h))["state"] == "active"
    carol.token = capi.login(carol.name, carol.password)["access_token"]

    # Role: the sockets close (the role is read at sign-in), the next sign-in is an admin.
    ws = await connect(cserver, carol.token)
    assert (
        ok(c.post(f"/api/admin/users/{carol.name}/role", json={"role": "admin"}, headers=h))["role"]
        == "admin"
    )
    assert await closed_with(ws) == 4003
    token = capi.login(carol.name, carol.password)["access_token"]
    assert ok(c.get("/api/me", headers={"Authorization": f"Bearer {token}"}))["role"] == "admin"

    # Password reset: a one-time password; the old one and every token stop working.
    ws = await connect(cserver, token)
    reset = ok(c.post(f"/api/admin/users/{carol.name}/password", headers=h))
    assert reset["name"] == carol.name and len(reset["password"]) >= 12
    assert await closed_with(ws) == 4003
    assert c.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert c.post(
        "/api/auth/token", data={"username": carol.name, "password": carol.password}
    ).status_code in (400, 401)
    fresh = capi.login(carol.name, reset["password"])["access_token"]
    changed = c.post(
        "/api/auth/password",
        json={"old_password": reset["password"], "new_password": "carol's own password"},
        headers={"Authorization": f"Bearer {fresh}"},
    )
    assert changed.status_code == 200, changed.text

    # Never to yourself; never a bot's role; unknown users are 404.
    for action, body in (("role", {"role": "user"}), ("disable", None), ("ban", None)):
        r = c.post(f"/api/admin/users/{boss.name}/{action}", json=body, headers=h)
        assert r.status_code == 409, r.text
    bot = capi.bot(boss)
    r = c.post(f"/api/admin/users/{bot.name}/role", json={"role": "admin"}, headers=h)
    assert r.status_code == 409
    assert c.post("/api/admin/users/nobody_at_all/disable", headers=h).status_code == 404
    r = c.post(f"/api/admin/users/{carol.name}/role", json={"role": "bot"}, headers=h)
    assert r.status_code == 422


async def test_bots_are_listed_and_rotated(cserver: Server, capi: Api) -> None:
    c = capi.client
    boss = capi.admin(unique("boss"))
    h = boss.headers
    bot = capi.bot(boss)
    listed = {b["name"]: b for b in ok(c.get("/api/bots", headers=h))["items"]}
    assert listed[bot.name]["state"] == "active" and listed[bot.name]["live_tokens"] == 1
    assert "token" not in listed[bot.name]

    ws = await connect(cserver, bot.token)
    rotated = ok(c.post(f"/api/bots/{bot.id}/rotate", headers=h))
    assert rotated["name"] == bot.name and rotated["token"] != bot.token
    assert await closed_with(ws) == 4003
    assert c.get("/api/me", headers=bot.headers).status_code == 401
    new = {"Authorization": f"Bearer {rotated['token']}"}
    assert ok(c.get("/api/me", headers=new))["name"] == bot.name
    ws = await connect(cserver, rotated["token"])
    await ws.close()

    ok(c.delete(f"/api/bots/{bot.id}", headers=h), 204)
    listed = {b["name"]: b for b in ok(c.get("/api/bots", headers=h))["items"]}
    assert listed[bot.name]["state"] == "revoked" and listed[bot.name]["live_tokens"] == 0
    assert c.get("/api/me", headers=new).status_code == 401
    user = capi.user()
    assert c.post(f"/api/bots/{user.id}/rotate", headers=h).status_code == 404


async def test_admins_watch_every_rooms_presence_live(cserver: Server, capi: Api) -> None:
    boss = capi.admin(unique("boss"))
    alice = capi.user()
    room = capi.room(alice, unique("lobby"))
    early = await connect(cserver, alice.token)
    await send(early, type="join", room=room)
    await recv_until(early, "joined", room=room)

    # The snapshot (on a pair: the admin's process need not be alice's), then changes.
    admin = await connect(cserver, boss.token)
    await send(admin, type="watch", topic="presence", ref="w1")
    snapshot = await recv_until(admin, "presence_snapshot")
    assert snapshot["ref"] == "w1"
    rooms = {r["room"]: [u["name"] for u in r["users"]] for r in snapshot["rooms"]}
    assert rooms[room] == [alice.name]

    bob = capi.user()
    ws = await connect(cserver, bob.token)
    await send(ws, type="join", room=room)
    # (alice's own join may be announced after the snapshot: harmless, it says the same)
    await presence_change(admin, room, "joined", bob)
    await ws.close()
    await presence_change(admin, room, "left", bob)

    # Off: nothing more comes.
    await send(admin, type="watch", topic="presence", on=False)
    await early.close()
    with pytest.raises(TimeoutError):
        await recv_until(admin, "presence_changes", timeout=1.0)
    await admin.close()

    # Not for anyone else.
    ws = await connect(cserver, alice.token)
    await send(ws, type="watch", topic="presence", ref="w2")
    refused = await recv_until(ws, "error", ref="w2")
    assert refused["code"] == "forbidden"
    await ws.close()


async def test_the_charts_count_messages_errors_and_tasks(cserver: Server, capi: Api) -> None:
    c = capi.client
    boss = capi.admin(unique("boss"))
    user = capi.user()
    room = capi.room(user)
    ws = await connect(cserver, user.token)
    await send(ws, type="join", room=room)
    await recv_until(ws, "joined", room=room)
    for i in range(5):
        await say(ws, room, f"counted {i}")
    await send(ws, type="send", room="no such room here", body="x", ref="bad")
    await recv_until(ws, "error", ref="bad")
    assert c.get("/api/rooms/no-such-room/messages", headers=user.headers).status_code == 404
    demo = ok(
        c.post(
            "/api/tasks",
            json={"kind": "demo", "params": {"steps": 2, "delay": 0.01}},
            headers=user.headers,
        ),
        202,
    )
    wait_task(capi, user, demo["id"], "succeeded")

    deadline = time.monotonic() + 10
    while True:
        stats = ok(c.get("/api/admin/stats", params={"minutes": 5}, headers=boss.headers))
        samples = stats["samples"]
        messages = sum(s["messages"] for s in samples)
        errors: dict[str, int] = {}
        for s in samples:
            for key, n in s["errors"].items():
                errors[key] = errors.get(key, 0) + n
        done = sum(b["succeeded"] for b in stats["tasks"])
        if messages >= 5 and errors.get("http:404") and errors.get("ws:not_joined") and done:
            break
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.2)
    assert stats["interval"] == 0.5
    assert stats["scope"] == ("site" if capi.server.env.get("CHAT_REDIS_URL") else "process")
    with_acks = [s for s in samples if s["acks"]]
    assert with_acks and all(0 < s["ack_p50_ms"] <= s["ack_p99_ms"] for s in with_acks)
    assert max(s["connections"] for s in samples) >= 1
    stamps = [s["ts"] for s in samples]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    await ws.close()


def test_health_shows_the_database_the_broker_and_the_processes(cserver: Server, capi: Api) -> None:
    boss = capi.admin(unique("boss"))
    demo = ok(
        capi.client.post(
            "/api/tasks",
            json={"kind": "demo", "params": {"steps": 100, "delay": 0.1}},
            headers=boss.headers,
        ),
        202,
    )
    wait_task(capi, boss, demo["id"], "running")
    time.sleep(1.2)  # every process has sampled (its heartbeat)
    health = ok(capi.client.get("/api/admin/health", headers=boss.headers))
    ok(capi.client.post(f"/api/tasks/{demo['id']}/cancel", headers=boss.headers))
    workers = [w for w in health["task_workers"] if w["alive"] and w["active_tasks"] >= 1]
    assert workers, health["task_workers"]
    assert health["status"] == "ok" and health["draining"] is False
    assert set(health["checks"]) == {"database", "broker"}
    for check in health["checks"].values():
        assert check["status"] == "ok" and check["latency_ms"] >= 0
    pair = bool(capi.server.env.get("CHAT_REDIS_URL"))
    assert health["broker"] == ("redis" if pair else "memory")
    alive = [p for p in health["processes"] if p["alive"]]
    assert len(alive) == (2 if pair else 1)
    assert sum(p["this"] for p in health["processes"]) == 1


async def presence_change(ws: Any, room: str, side: str, who: Account) -> None:
    """Skip frames until a `presence_changes` of `room` lists `who` on `side`."""
    while True:
        change = await recv_until(ws, "presence_changes", room=room)
        if who.name in [u["name"] for u in change[side]]:
            return


async def closed_with(ws: Any) -> int | None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    except TimeoutError:
        return None
