"""The admin console (`/admin`) in headless Chromium, driven by Playwright, against a real server.

Covers: a non-admin is turned away; an admin starts an export from the form, watches
the bar go to 100 % and downloads the file; a failing task raises an alert in the
feed; cancel stops a running task; the online list kept live by presence frames, kick
and ban from it; the last hour's charts and the health view; accounts (search, disable,
role, password reset); bots (create, rotate, revoke); the audit log and its filters;
the connection indicator through a server restart (reconnect with backoff).

Screenshots land in `test-output/screenshots/admin-*.png` for review. Chromium comes
from the system (`/usr/bin/chromium`, or `CHAT_CHROMIUM`); nothing is downloaded.
Without it the module skips, or fails under `CHAT_REQUIRE_SERVICES=1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.browser import BrowserPage
from tests.conftest import ServerFactory
from tests.dbseed import seed_messages
from tests.harness import Account, Api, ServerProcess, connect, join, say, unique
from tests.webhook_receiver import Receiver

# The page and its flows, not the fan-out, are under test: one backend is enough (the
# two-process behaviour behind each frame has tests of its own).
pytestmark = [pytest.mark.browser, pytest.mark.one_backend]

TIMEOUT = 15_000  # ms, for every wait on the page
EXPORT_ROWS = 20_000


@pytest.fixture(scope="module")
def admin_server(module_servers: ServerFactory) -> ServerProcess:
    # No presence grace: a kicked user leaves the online list at once.
    return module_servers(
        task_progress_interval=0.1,
        task_concurrency=4,
        presence_grace=0,
        # A webhook test aims at a receiver on this host, which dies fast.
        webhooks_allow_private=1,
        webhook_backoff_base=0.05,
        webhook_max_failures=2,
        webhook_poll_interval=0.2,
        stats_sample_interval=0.5,  # the charts fill in seconds
    )


@pytest.fixture(scope="module")
def admin_api(admin_server: ServerProcess) -> Iterator[Api]:
    client = Api(admin_server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def boss(admin_api: Api) -> Account:
    return admin_api.admin(unique("boss"))


class Console(BrowserPage):
    """One browser context on /admin, with steps that read like what an admin does."""

    timeout = TIMEOUT
    shot_prefix = "admin-"
    full_page_shots = True

    def sign_in(self, account: Account) -> Console:
        self.page.goto(self.base + "/admin")
        self.submit_sign_in(account.name, account.password)
        return self

    def open(self, account: Account) -> Console:
        self.sign_in(account)
        self.page.locator("#console-view").wait_for()
        self.expect("#conn-text").to_have_text("Online")
        return self

    def start_task(self, kind: str, **params: Any) -> Any:
        """Fill the form for `kind` and start it; returns the new task's list item."""
        before = set(
            self.page.eval_on_selector_all("#task-list > li", "els => els.map(e => e.dataset.id)")
        )
        self.page.select_option("#task-kind", kind)
        for name, value in params.items():
            field = self.page.locator(f"#param-{name}")
            if field.evaluate("el => el.tagName") == "SELECT":
                field.select_option(str(value))
            else:
                field.fill(str(value))
        self.page.click("#task-start")
        self.expect("#task-form-error").to_be_hidden()
        self.page.wait_for_function(
            "n => document.querySelectorAll('#task-list > li').length > n", arg=len(before)
        )
        new_id = next(
            i
            for i in self.page.eval_on_selector_all(
                "#task-list > li", "els => els.map(e => e.dataset.id)"
            )
            if i not in before
        )
        return self.page.locator(f'#task-list > li[data-id="{new_id}"]')


Consoles = Callable[..., Console]


def in_thread(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to the end (Playwright's sync API owns this thread's event loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=120)


@pytest.fixture
def consoles(browser: Any, admin_server: ServerProcess) -> Iterator[Consoles]:
    opened: list[Console] = []

    def make(width: int = 1360, height: int = 900) -> Console:
        context = browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True
        )
        console = Console(context, admin_server.http)
        opened.append(console)
        return console

    yield make
    problems = [p for c in opened for p in c.problems]
    for c in opened:
        c.context.close()
    assert not problems, problems


# --- tests -------------------------------------------------------------------------------


def test_a_non_admin_is_told_they_are_not_an_admin(consoles: Consoles, admin_api: Api) -> None:
    user = admin_api.user()
    console = consoles()
    console.page.goto(console.base + "/admin")
    console.page.locator("#signin-view").wait_for()
    console.shot("01-sign-in", full_page=False)
    console.sign_in(user)
    console.expect("#signin-notice").to_contain_text(
        f"signed in as {user.name}, who is not an admin"
    )
    console.expect("#console-view").to_be_hidden()
    console.expect("#signin-switch").to_have_count(0)  # the console offers no registration
    console.shot("02-not-an-admin", full_page=False)


def test_an_admin_exports_a_room_watches_it_finish_and_downloads_it(
    consoles: Consoles, admin_api: Api, admin_server: ServerProcess, boss: Account, tmp_path: Path
) -> None:
    owner = admin_api.user()
    room = admin_api.room(owner, unique("busy"))
    bodies = [f'message {i} with <b>markup</b> & "quotes"' for i in range(EXPORT_ROWS)]
    in_thread(seed_messages(admin_server.database_url, room, owner.name, bodies))

    console = consoles().open(boss)
    # Record every value the export's bar takes, as the page renders it.
    console.page.evaluate(
        """() => {
            window.__bars = [];
            new MutationObserver(() => {
                for (const li of document.querySelectorAll('#task-list > li[data-kind=export]')) {
                    const bar = li.querySelector('progress');
                    if (bar) window.__bars.push([li.dataset.status, bar.value]);
                }
            }).observe(document.getElementById('task-list'), {subtree: true, childList: true});
        }"""
    )
    task = console.start_task("export", room=room, format="jsonl")
    console.expect(task.locator(".status")).to_have_text("succeeded")
    console.expect(task.locator(".pct")).to_have_text("100 %")
    assert task.locator("progress").evaluate("el => el.value") == 1
    seen = console.page.evaluate("window.__bars")
    assert any(status == "running" and 0 < value < 1 for status, value in seen), seen
    values = [value for _, value in seen]
    assert values == sorted(values), "the bar never goes back"
    console.expect(task.locator(".task-result")).to_have_text(
        re.compile(rf"^{EXPORT_ROWS} messages")
    )
    console.shot("03-export-done")

    with console.page.expect_download() as info:
        task.locator("button.download").click()
    download = info.value
    assert download.suggested_filename.endswith(".jsonl") and room in download.suggested_filename
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    lines = saved.read_text(encoding="utf-8").splitlines()
    assert len(lines) == EXPORT_ROWS
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    assert (first["seq"], first["body"], first["user"]["name"]) == (1, bodies[0], owner.name)
    assert (last["seq"], last["body"]) == (EXPORT_ROWS, bodies[-1])


def test_a_failing_task_shows_an_alert(consoles: Consoles, boss: Account) -> None:
    console = consoles().open(boss)
    task = console.start_task("demo", steps=10, delay=0.05, fail_at=0.6)
    console.expect(task.locator(".status")).to_have_text("failed")
    console.expect(task.locator(".task-error")).to_contain_text("demo failure requested at 60%")
    console.expect(task.locator(".pct")).to_have_text("60 %")
    task_id = task.get_attribute("data-id")
    alert = console.page.locator("#alert-list > li.alert", has_text=task_id[:8])
    console.expect(alert).to_have_count(1)
    console.expect(alert).to_have_attribute("data-level", "error")
    console.expect("#alerts-new").to_be_visible()
    console.shot("04-failed-task-alert")
    # A console opened later shows the stored alert and the failed task.
    later = consoles().open(boss)
    console.expect(
        later.page.locator("#alert-list > li.alert", has_text=task_id[:8])
    ).to_have_count(1)
    later.expect(later.page.locator(f'#task-list > li[data-id="{task_id}"] .status')).to_have_text(
        "failed"
    )


def test_cancel_stops_a_running_task(consoles: Consoles, admin_api: Api, boss: Account) -> None:
    console = consoles().open(boss)
    task = console.start_task("demo", steps=100, delay=0.2)
    console.expect(task.locator(".status")).to_have_text("running")
    console.expect(task.locator(".elapsed")).to_have_text(re.compile(r"^running \d+s$"))
    console.shot("05-running-task")
    task.locator("button.cancel").click()
    console.expect(task.locator(".status")).to_have_text("cancelled")
    console.expect(task.locator("button.cancel")).to_have_count(0)
    task_id = task.get_attribute("data-id")
    r = admin_api.client.get(f"/api/tasks/{task_id}", headers=boss.headers)
    assert r.json()["status"] == "cancelled" and r.json()["progress"] < 0.5
    progress = task.locator("progress").evaluate("el => el.value")
    console.page.wait_for_timeout(700)
    assert task.locator("progress").evaluate("el => el.value") == progress  # it stopped


def test_kick_and_ban_from_the_online_list(
    consoles: Consoles, admin_api: Api, admin_server: ServerProcess, boss: Account
) -> None:
    alice, mallory = admin_api.user(unique("alice")), admin_api.user(unique("mallory"))
    room = admin_api.room(alice, unique("lobby"))
    sockets = {}
    stack = contextlib.ExitStack()
    for who in (alice, mallory):
        ws = stack.enter_context(
            ws_connect(admin_server.ws, additional_headers={"Authorization": f"Bearer {who.token}"})
        )
        ws.recv(timeout=5)  # hello
        ws.send(json.dumps({"type": "join", "room": room}))
        sockets[who.name] = ws
    console = consoles().open(boss)
    block = console.page.locator(f'.room-block[data-room="{room}"]')
    console.expect(block.locator(".person")).to_have_count(2)  # the snapshot
    console.expect("#online-status").to_contain_text("Live since")
    # Live: someone joining shows up without any click or reload (presence frames).
    late = admin_api.user(unique("late"))
    ws = stack.enter_context(
        ws_connect(admin_server.ws, additional_headers={"Authorization": f"Bearer {late.token}"})
    )
    ws.recv(timeout=5)
    ws.send(json.dumps({"type": "join", "room": room}))
    console.expect(block.locator(".person")).to_have_count(3)
    ws.close()
    console.expect(block.locator(".person")).to_have_count(2)
    console.shot("06-online")

    ban = block.locator(f'.person[data-user="{mallory.name}"] button[data-action="ban"]')
    ban.click()
    console.expect(ban).to_have_text("Ban?")  # asks once more
    ban.click()
    console.expect("#moderate-status").to_have_text(f"{mallory.name} was banned.")
    assert closed_with(sockets[mallory.name]) == 4003
    r = admin_api.client.post(
        "/api/auth/token", data={"username": mallory.name, "password": mallory.password}
    )
    assert r.status_code in (401, 403)

    kick = block.locator(f'.person[data-user="{alice.name}"] button[data-action="kick"]')
    kick.click()
    kick.click()
    console.expect("#moderate-status").to_have_text(
        re.compile(f"^{re.escape(alice.name)} was kicked")
    )
    assert closed_with(sockets[alice.name]) == 4003
    console.expect(console.page.locator(f'.room-block[data-room="{room}"]')).to_have_count(0)

    # Unban by name.
    console.page.fill("#moderate-name", mallory.name)
    console.page.click("#moderate-unban")
    console.expect("#moderate-status").to_have_text(f"{mallory.name} was unbanned.")
    assert admin_api.login(mallory.name, mallory.password)["access_token"]
    stack.close()


def closed_with(ws: Any) -> int | None:
    try:
        while True:
            ws.recv(timeout=5)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    except TimeoutError:
        return None


def test_the_console_reconnects_after_a_server_restart(
    consoles: Consoles, admin_server: ServerProcess, boss: Account
) -> None:
    console = consoles().open(boss)
    admin_server.stop()
    console.expect("#conn").not_to_have_attribute("data-state", "online")
    console.expect("#conn-text").to_have_text(re.compile(r"Reconnecting|Connecting"))
    console.expect("#banner").to_contain_text("Reconnecting")  # the chat's words and banner
    console.shot("07-disconnected", full_page=False)
    admin_server.start()
    console.expect("#conn-text").to_have_text("Online", timeout=40_000)
    console.expect("#conn").to_have_attribute("data-state", "online")
    console.expect("#banner").to_be_hidden()


def test_signing_out_of_the_console_shows_the_shared_form(
    consoles: Consoles, boss: Account
) -> None:
    console = consoles().open(boss)
    console.page.click("#signout")
    console.expect("#signin-view").to_be_visible()
    console.expect("#signin-notice").to_have_text("You have signed out.")
    console.expect("#console-view").to_be_hidden()
    console.expect("#conn").to_have_attribute("data-state", "idle")
    console.page.reload()
    console.expect("#signin-view").to_be_visible()  # nothing left to resume


def test_task_and_alert_text_is_shown_as_text_and_fits_a_phone(
    consoles: Consoles, admin_api: Api, admin_server: ServerProcess, boss: Account
) -> None:
    user = admin_api.user()
    room = admin_api.room(user, "<img src=x onerror=window.__pwned=1> " + unique("r"))
    in_thread(seed_messages(admin_server.database_url, room, user.name, ["<b>hi</b>"] * 3))
    r = admin_api.client.post(
        "/api/tasks", json={"kind": "export", "params": {"room": room}}, headers=user.headers
    )
    assert r.status_code == 202, r.text
    console = consoles(width=420, height=900).open(boss)
    row = console.page.locator(f'#task-list > li[data-id="{r.json()["id"]}"]')
    console.expect(row.locator(".task-params")).to_contain_text(f"#{room}")
    console.expect(row.locator(".status")).to_have_text("succeeded")
    assert console.page.locator("#task-list img, #alert-list img").count() == 0
    console.page.wait_for_timeout(200)
    assert console.page.evaluate("window.__pwned") is None
    console.shot("08-phone")


def test_a_dead_webhook_shows_disabled_with_its_failed_deliveries(
    consoles: Consoles, admin_api: Api, admin_server: ServerProcess
) -> None:
    # An admin of its own: the module's `boss` may have signed out (tokens revoked).
    boss = admin_api.admin(unique("hooks"))
    receiver = Receiver(failing=True)
    try:
        bot = admin_api.bot(boss)
        room = admin_api.room(boss)
        r = admin_api.client.post(
            "/api/webhooks",
            json={"bot": bot.name, "url": receiver.url, "events": ["message"], "rooms": [room]},
            headers=boss.headers,
        )
        assert r.status_code == 201, r.text
        hook_id = r.json()["id"]

        async def post() -> None:
            ws = await connect(admin_server, boss.token)
            await join(ws, room)
            await say(ws, room, "for the bot")
            await ws.close()

        in_thread(post())
        console = consoles().open(boss)
        row = console.page.locator(f'#webhook-list > li[data-webhook="{hook_id}"]')
        console.page.click("#webhooks-refresh")
        row.wait_for()
        # Disabled after two failures: the alert refreshes the list.
        console.expect(f'#webhook-list > li[data-webhook="{hook_id}"][data-state="disabled"]')\
            .to_be_visible()  # fmt: skip
        console.expect(row.locator(".webhook-reason")).to_contain_text("2 failed deliveries")
        # The attempt log may be written just after the disable is announced, and the
        # page reads it once per click: wait until the server has both attempts.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            log = admin_api.client.get(
                f"/api/webhooks/{hook_id}/deliveries", headers=boss.headers
            ).json()
            if sum(a["status"] == "failed" for a in log["items"]) >= 2:
                break
            time.sleep(0.1)
        row.get_by_role("button", name="Deliveries").click()
        failed = row.locator('.attempt[data-status="failed"]')
        console.expect(failed).to_have_count(2)
        console.expect(failed.first).to_contain_text("HTTP 500")
        console.shot("webhooks-disabled")
    finally:
        receiver.close()


# --- the last hour, accounts, bots, the audit log -------------------------------------------


def test_the_overview_draws_the_last_hour_and_the_health(
    consoles: Consoles, admin_api: Api, admin_server: ServerProcess
) -> None:
    boss = admin_api.admin(unique("charts"))  # the module's may have signed out
    user = admin_api.user()
    room = admin_api.room(user)

    async def chat() -> None:
        ws = await connect(admin_server, user.token)
        await join(ws, room)
        for i in range(10):
            await say(ws, room, f"for the chart {i}")
        await ws.send(json.dumps({"type": "send", "room": "nowhere", "body": "x", "ref": "r"}))
        await ws.close()

    in_thread(chat())
    assert admin_api.client.get("/api/rooms/nowhere/messages", headers=user.headers).status_code
    console = consoles().open(boss)
    for chart in ("messages", "connections", "latency", "errors", "tasks"):
        console.expect(f'#charts figure[data-chart="{chart}"] svg').to_have_count(1)
    # Lines drawn from the server's samples (the page reloads them every 10 s).
    console.expect('#charts figure[data-chart="messages"] polyline').not_to_have_count(0)
    latency = console.page.locator('#charts figure[data-chart="latency"]')
    for series in ("series-0", "series-2"):  # p50 and p99: lines, or dots for lone samples
        console.expect(latency.locator(f"polyline.{series}, circle.{series}")).not_to_have_count(0)
    console.expect('#charts figure[data-chart="errors"] .legend').to_contain_text("ws:not_joined")
    console.expect('#health [data-check="database"][data-status="ok"]').to_have_count(1)
    console.expect('#health [data-check="broker"][data-status="ok"]').to_contain_text("ms")
    console.expect('#health [data-alive="true"]').not_to_have_count(0)
    console.shot("09-overview", full_page=False)


def test_accounts_are_found_disabled_promoted_and_given_a_new_password(
    consoles: Consoles, admin_api: Api
) -> None:
    boss = admin_api.admin(unique("accounts"))
    dora = admin_api.user(unique("dora"))
    console = consoles().open(boss)
    console.page.fill("#users-q", dora.name)
    console.page.click("#users-form button[type=submit]")
    row = console.page.locator(f'#users-list tr[data-user="{dora.name}"]')
    console.expect(row).to_have_attribute("data-state", "active")

    row.locator('button[data-action="disable"]').click()
    row.locator('button[data-action="disable"]').click()  # the second click confirms
    console.expect(row).to_have_attribute("data-state", "disabled")
    r = admin_api.client.post(
        "/api/auth/token", data={"username": dora.name, "password": dora.password}
    )
    assert r.status_code == 401
    row.locator('button[data-action="enable"]').click()
    console.expect(row).to_have_attribute("data-state", "active")

    row.locator('button[data-action="role"]').click()
    row.locator('button[data-action="role"]').click()
    console.expect(row).to_have_attribute("data-role", "admin")

    row.locator('button[data-action="password"]').click()
    row.locator('button[data-action="password"]').click()
    secret = console.page.locator("#users-secret .secret-value")
    console.expect(secret).to_be_visible()
    password = secret.text_content()
    assert password and admin_api.login(dora.name, password)["access_token"]
    r = admin_api.client.post(
        "/api/auth/token", data={"username": dora.name, "password": dora.password}
    )
    assert r.status_code == 401  # the old one stopped working
    console.shot("10-accounts")
    console.page.locator("#users-secret button", has_text="Done").click()
    console.expect("#users-secret").to_be_hidden()


def test_bots_are_created_rotated_and_revoked(consoles: Consoles, admin_api: Api) -> None:
    boss = admin_api.admin(unique("bots"))
    console = consoles().open(boss)
    name = unique("robo")
    console.page.fill("#bot-name", name)
    console.page.click("#bot-form button[type=submit]")
    token = console.page.locator("#bots-secret .secret-value")
    console.expect(token).to_be_visible()
    first = token.text_content()
    me = admin_api.client.get("/api/me", headers={"Authorization": f"Bearer {first}"})
    assert me.json()["name"] == name
    row = console.page.locator(f'#bot-list li[data-bot="{name}"]')
    console.expect(row).to_have_attribute("data-state", "active")

    row.locator('button[data-action="rotate"]').click()
    row.locator('button[data-action="rotate"]').click()
    console.expect(token).not_to_have_text(first or "")
    second = token.text_content()
    assert (
        admin_api.client.get("/api/me", headers={"Authorization": f"Bearer {first}"}).status_code
        == 401
    )
    assert (
        admin_api.client.get("/api/me", headers={"Authorization": f"Bearer {second}"}).status_code
        == 200
    )
    console.shot("11-bots")

    row.locator('button[data-action="revoke"]').click()
    row.locator('button[data-action="revoke"]').click()
    console.expect(row).to_have_attribute("data-state", "revoked")
    assert (
        admin_api.client.get("/api/me", headers={"Authorization": f"Bearer {second}"}).status_code
        == 401
    )


def test_the_audit_log_lists_and_filters_admin_actions_as_text(
    consoles: Consoles, admin_api: Api
) -> None:
    boss = admin_api.admin(unique("auditor"))
    owner, eve = admin_api.user(), admin_api.user(unique("eve"))
    room = admin_api.room(
        owner, "<img src=x onerror=window.__pwned=1> " + unique("r"), private=True
    )
    r = admin_api.client.post(
        f"/api/rooms/{room}/members", json={"username": eve.name}, headers=boss.headers
    )
    assert r.status_code == 201, r.text
    console = consoles().open(boss)
    # An action taken in the console shows up in the log at once.
    console.page.fill("#moderate-name", eve.name)
    console.page.click('#moderate-form button[data-action="ban"]')
    console.expect("#moderate-status").to_have_text(f"{eve.name} was banned.")
    rows = console.page.locator("#audit-list tr")
    console.expect(rows.first).to_have_attribute("data-action", "user.ban")
    console.expect(rows.first.locator(".audit-target")).to_have_text(f"user {eve.name}")
    console.expect(rows.first.locator(".audit-address")).to_have_text("127.0.0.1")
    added = console.page.locator('#audit-list tr[data-action="room.member_add"]', has_text=room)
    console.expect(added.first.locator(".audit-target")).to_have_text(f"room {room}")
    assert console.page.locator("#audit-list img").count() == 0
    assert console.page.evaluate("window.__pwned") is None

    console.page.fill("#audit-action", "room")
    console.page.fill("#audit-target", room)
    console.page.click("#audit-form button[type=submit]")
    console.expect(rows).to_have_count(1)
    console.expect(rows.first).to_have_attribute("data-action", "room.member_add")
    console.expect(rows.first.locator(".audit-detail")).to_have_text(f"user: {eve.name}")
    console.shot("12-audit")
    console.page.click("#audit-form button[type=reset]")
    console.expect(rows.first).to_have_attribute("data-action", "user.ban")
