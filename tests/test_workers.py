"""Task workers and retention, with real processes.

- Two chat processes that run no task (`CHAT_RUN_TASKS=never`) and a `chat worker`,
  all sharing Redis: a task started through one chat process runs in the worker; an
  admin connected to the other chat process watches it live, a console opening late
  gets its state first, and a cancel made through a chat process stops it.
- A worker killed with `kill -9` mid-task: the chat processes mark its task
  interrupted and raise an alert.
- Retention: old messages (their files, bytes on disk too) and notifications are
  purged, new ones kept; with two processes one of them runs each period.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

from chat.storage.models import Notification
from tests.conftest import Servers
from tests.dbseed import age_messages, seed_messages
from tests.harness import Api, ServerPair, ServerProcess, connect, recv, recv_until

pytestmark = pytest.mark.two_nodes

QUICK = {"task_heartbeat_interval": 0.3, "task_progress_interval": 0.1}


def start(api: Api, headers: dict[str, str], kind: str, **params: Any) -> dict[str, Any]:
    r = api.client.post("/api/tasks", json={"kind": kind, "params": params}, headers=headers)
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def pair_of(server: Any) -> ServerPair:
    assert isinstance(server, ServerPair)
    return server


async def test_a_task_runs_in_the_worker_watched_and_cancelled_through_other_processes(
    make_server: Servers,
) -> None:
    site = pair_of(make_server(task_workers=1, **QUICK))
    a, b = site.nodes
    assert a.env["CHAT_RUN_TASKS"] == "never" and b.env["CHAT_RUN_TASKS"] == "never"
    api_a, api_b = Api(a), Api(b)
    boss, user = api_a.admin(), api_a.user()
    watcher = await connect(b, boss.token)
    starter = await connect(b, user.token)
    task = start(api_a, user.headers, "demo", steps=200, delay=0.05)
    assert task["status"] == "queued"
    queued = await recv_until(watcher, "task", id=task["id"])
    assert queued["status"] == "queued", queued
    running = await recv_until(watcher, "task", id=task["id"], status="running")
    await recv_until(starter, "task", id=task["id"], status="running")
    # A console opening late on A gets the present state before anything else.
    late = await connect(a, boss.token)
    first = await recv(late, timeout=2)
    assert first["id"] == task["id"] and first["status"] == "running", first
    # Polling works through either process.
    assert api_b.client.get(f"/api/tasks/{task['id']}", headers=user.headers).json()["status"] in (
        "running",
        "cancelled",
    )
    # Cancelled through B: the worker stops it; the answer already shows it.
    r = api_b.client.post(f"/api/tasks/{task['id']}/cancel", headers=user.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert r.json()["progress"] < 1.0
    final = await recv_until(watcher, "task", id=task["id"], status="cancelled", timeout=5)
    assert final["started_at"] == running["started_at"] and final["finished_at"]
    await recv_until(starter, "task", id=task["id"], status="cancelled", timeout=5)
    # It ran in the worker, not in a chat process.
    worker_log = site.workers[0].log()
    assert f"task {task['id']} (demo) cancelled" in worker_log, worker_log[-2000:]
    for node in site.nodes:
        assert f"task {task['id']} (demo) cancelled" not in node.log()
    # The next one runs to the end, its frames reaching A's sockets too.
    done = start(api_b, boss.headers, "demo", steps=5, delay=0.01)
    final = await recv_until(late, "task", id=done["id"], status="succeeded", timeout=10)
    assert final["progress"] == 1.0
    for ws in (watcher, starter, late):
        await ws.close()
    api_a.close()
    api_b.close()


async def test_a_worker_killed_mid_task_leaves_it_interrupted_with_an_alert(
    make_server: Servers,
) -> None:
    site = pair_of(make_server(task_workers=1, **QUICK))
    a, b = site.nodes
    api = Api(a)
    boss = api.admin()
    watcher = await connect(b, boss.token)
    task = start(api, boss.headers, "demo", steps=300, delay=0.05)
    await recv_until(watcher, "task", id=task["id"], status="running")
    site.workers[0].stop(signal.SIGKILL)
    failed = await recv_until(watcher, "task", id=task["id"], status="failed", timeout=10)
    assert failed["error"].startswith("interrupted"), failed
    alert = await recv_until(watcher, "alert", timeout=5)
    assert task["id"][:8] in alert["text"] and "running" in alert["text"], alert
    polled = api.client.get(f"/api/tasks/{task['id']}", headers=boss.headers).json()
    assert polled["status"] == "failed" and polled["error"].startswith("interrupted")
    stored = api.client.get("/api/alerts", headers=boss.headers).json()["items"]
    assert any(task["id"][:8] in item["text"] for item in stored)
    # A new worker takes the next task; nothing runs the dead one again.
    site.workers[0].start()
    again = start(api, boss.headers, "demo", steps=3, delay=0.01)
    await recv_until(watcher, "task", id=again["id"], status="succeeded", timeout=10)
    await asyncio.sleep(0.5)
    assert api.client.get(f"/api/tasks/{task['id']}", headers=boss.headers).json()["status"] == (
        "failed"
    )
    await watcher.close()
    api.close()


# --- retention ----------------------------------------------------------------------------


async def _age_notifications(database_url: str, age: float) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(update(Notification).values(created_at=time.time() - age))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("with_worker", [False, True], ids=["in_process", "worker"])
async def test_retention_purges_old_messages_files_and_notifications_and_keeps_new_ones(
    make_server: Servers, tmp_path: Path, with_worker: bool
) -> None:
    data = tmp_path / "data"
    settings: dict[str, Any] = {"data_dir": data, "send_rate": 100, "send_burst": 100}
    if with_worker:
        settings["task_workers"] = 1
    # Nothing is old yet when it starts: the first run (after 1 s) finds nothing.
    began = time.monotonic()
    site = pair_of(make_server(retention_days=1, retention_interval=2, **settings))
    api = Api(site.nodes[0])
    boss, user = api.admin(), api.user()
    room, other = api.room(user), api.room(user)
    old = await seed_messages(site.database_url, room, user.name, ["old"] * 1200)
    await seed_messages(site.database_url, other, user.name, ["old elsewhere"] * 3)
    # An old message with a file, and a new one with a file.
    files = []
    for body in ("old with a file", "new with a file"):
        up = api.client.post(
            "/api/files",
            data={"room": room},
            files={"file": (f"{body}.txt", body.encode() * 10, "text/plain")},
            headers=user.headers,
        )
        assert up.status_code == 201, up.text
        files.append(up.json()["id"])
        r = api.client.post(
            f"/api/rooms/{room}/messages",
            json={"body": body, "ref": body, "attachments": [up.json()["id"]]},
            headers=user.headers,
        )
        assert r.status_code == 201, r.text
        if body.startswith("old"):
            old.append(r.json()["seq"])
    r = api.client.post(
        "/api/notifications",
        json={"username": user.name, "title": "old", "body": "an old note"},
        headers=boss.headers,
    )
    assert r.status_code == 201, r.text
    blobs_before = [p for p in (data / "files").rglob("*") if p.is_file()]
    assert len(blobs_before) == 2
    await age_messages(site.database_url, room, old, 3 * 86400)
    await age_messages(site.database_url, other, [1, 2, 3], 3 * 86400)
    await _age_notifications(site.database_url, 3 * 86400)
    r = api.client.post(
        "/api/notifications",
        json={"username": user.name, "title": "new", "body": "a new note"},
        headers=boss.headers,
    )
    assert r.status_code == 201
    deadline = time.monotonic() + 30
    left: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    while time.monotonic() < deadline:  # a run purges the messages, then the notifications
        left = api.history(user, room, limit=100)
        notes = api.client.get("/api/notifications", headers=user.headers).json()["items"]
        if len(left) == 1 and not api.history(user, other, limit=100) and len(notes) == 1:
            break
        await asyncio.sleep(0.3)
    assert [m["body"] for m in left] == ["new with a file"], [m["body"] for m in left][:5]
    assert api.client.get(f"/api/files/{files[0]}", headers=user.headers).status_code == 404
    assert api.client.get(f"/api/files/{files[1]}", headers=user.headers).status_code == 200
    blobs_after = [p for p in (data / "files").rglob("*") if p.is_file()]
    assert len(blobs_after) == 1 and blobs_after[0] in blobs_before
    assert [n["title"] for n in notes] == ["new"], notes
    # One process of the site ran each period (a lease in the database): with a
    # worker, the worker; never more runs than lease periods went by.
    logs = {proc.log_path: proc.log() for proc in [*site.nodes, *site.workers]}
    runs = sum(log.count("retention (1 days)") for log in logs.values())
    if with_worker:
        assert {path for path, log in logs.items() if "retention (1" in log} == {
            site.workers[0].log_path
        }
    assert 1 <= runs <= (time.monotonic() - began) / 1.8 + 1, runs
    api.close()


def test_retention_is_off_by_default_and_run_tasks_never_needs_redis(
    make_process: Servers, tmp_path: Path
) -> None:
    server: ServerProcess = make_process()
    assert "retention (" not in server.log()  # no run logged
    done = server.cli("worker")
    assert done.returncode != 0 and "CHAT_REDIS_URL" in done.stderr
    broken = ServerProcess(server.database_url, tmp_path, run_tasks="never")
    with pytest.raises(RuntimeError, match="CHAT_REDIS_URL"):
        broken.start(timeout=10)
