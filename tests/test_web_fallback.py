"""The browser chat without WebSockets: it falls back to the event stream + REST send.

Alice reaches the server through a proxy that refuses WebSocket upgrades with 403
(tests/wsblock.py), as some corporate proxies do: a real refused handshake, not a
flag. Her page falls back by itself, says so, and chats with Bob (on a plain
WebSocket) both ways: messages, typing, reactions, edits and deletions (hers go by
their REST twins), and her read cursor; a server restart while on the fallback
resumes from the stream's cursor with nothing lost or doubled; once the proxy lets WebSockets
through, her page returns to the WebSocket and the chat goes on.

Screenshots land in `test-output/screenshots/fallback-*.png`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.harness import Api, ServerProcess
from tests.test_web_chat import ChatPage, assert_in_order_once
from tests.wsblock import WsBlockingProxy

pytestmark = [pytest.mark.browser, pytest.mark.one_backend]

TIMEOUT = 10_000
FALLBACK = "Online · fallback (HTTP stream)"


class FallbackPage(ChatPage):
    shot_prefix = "fallback-"


@pytest.fixture(scope="module")
def web_server(module_servers: ServerFactory) -> ServerProcess:
    return module_servers(send_rate=1000, send_burst=1000, task_progress_interval=0.1)


@pytest.fixture
def proxy(web_server: ServerProcess) -> Iterator[WsBlockingProxy]:
    blocking = WsBlockingProxy(web_server.port).start()
    yield blocking
    blocking.stop()


def test_falls_back_without_websockets_and_returns(
    browser: Any, web_server: ServerProcess, proxy: WsBlockingProxy
) -> None:
    api = Api(web_server)
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    pages: list[FallbackPage] = []
    try:
        # Alice is behind the blocking proxy; she tries the WebSocket again every 2 s.
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.add_init_script("localStorage.setItem('chat.ws_probe_seconds', '2')")
        a = FallbackPage(context, proxy.http)
        pages.append(a)
        b = FallbackPage(
            browser.new_context(viewport={"width": 1280, "height": 800}), web_server.http
        )
        pages.append(b)

        a.sign_in(alice)
        a.expect("#conn").to_have_text(FALLBACK)
        a.expect("#conn").to_have_attribute("data-transport", "stream")
        a.expect("#conn").to_have_attribute("title", re.compile("WebSockets are blocked"))
        assert proxy.refused_upgrades >= 2  # the WebSocket really failed, more than once
        a.open_room(room, me=alice.name)
        b.sign_in(bob).open_room(room, me=bob.name)
        b.expect("#conn").to_have_text("Online")
        a.expect("#presence-list").to_contain_text(bob.name)

        # Both ways: REST send from Alice, the event stream brings Bob's message and typing.
        a.say("hello from behind the proxy")
        b.expect(b.message("hello from behind the proxy")).to_have_count(1)
        a.expect(a.message("hello from behind the proxy")).to_have_attribute("data-state", "sent")
        b.page.locator("#message-input").fill("typing…")
        a.expect("#typing").to_have_text(f"{bob.name} is typing…")
        b.say("hello over the websocket")
        a.expect(a.message("hello over the websocket")).to_have_count(1)
        a.say("a reply to that")
        b.expect(b.message("a reply to that")).to_have_count(1)
        # Reactions both ways: Bob's arrives on the stream, Alice's goes by REST.
        b.act("a reply to that", "React")
        b.message("a reply to that").get_by_role("button", name="React with 👍").click()
        chip = a.message("a reply to that").locator('.reaction[data-emoji="👍"]')
        a.expect(chip.locator(".reaction-count")).to_have_text("1")
        chip.click()
        b_chip = b.message("a reply to that").locator('.reaction[data-emoji="👍"]')
        b.expect(b_chip.locator(".reaction-count")).to_have_text("2")
        a.expect(chip).to_have_attribute("aria-pressed", "true")
        # Alice types, edits and deletes her own words; Bob sees each at once.
        a.page.locator("#message-input").fill("typing too…")
        b.expect("#typing").to_have_text(f"{alice.name} is typing…")
        a.page.locator("#message-input").fill("")
        a.say("a typo to fix")
        a.act("a typo to fix", "Edit")
        editor = a.page.locator(".msg-editor textarea")
        editor.fill("a typo, fixed")
        editor.press("Enter")
        b.expect(b.message("a typo, fixed").locator(".msg-edited")).to_be_visible()
        a.expect(a.message("a typo, fixed").locator(".msg-edited")).to_be_visible()
        a.act("a typo, fixed", "Delete")
        a.message("a typo, fixed").get_by_role("button", name="Really delete?").click()
        for page in (a, b):
            page.expect(page.page.locator('#scroller li[data-deleted="true"]')).to_have_count(1)
        # Her read cursor moves by REST too: nothing is unread for her on the server.
        rooms = api.client.get("/api/rooms", headers=alice.headers).json()["items"]
        assert next(r for r in rooms if r["name"] == room)["unread"] == 0
        a.shot("01-on-the-fallback")
        b.shot("02-other-side-on-websocket")

        # A server restart while on the fallback: the stream resumes from its cursor (with
        # the last `id:` as `last_event_id`, since every ticket is single-use).
        web_server.stop()
        a.expect("#banner").to_contain_text("Reconnecting")
        a.say("typed while the server was down")
        queued = a.message("typed while the server was down")
        a.expect(queued).to_have_attribute("data-state", "queued")
        a.shot("03-reconnecting")
        # Alice's network stays away until Bob has said more: she must resume to see it.
        proxy.cut()
        web_server.start()
        b.expect("#conn").to_have_text("Online", timeout=20_000)
        for i in range(1, 4):
            b.say(f"meanwhile {i}")
        b.expect(b.message("meanwhile 3")).to_have_attribute("data-state", "sent")
        a.expect(a.message("meanwhile 1")).to_have_count(0)
        proxy.restore()
        a.expect("#conn").to_have_text(FALLBACK, timeout=20_000)
        a.expect(queued).to_have_attribute("data-state", "sent")
        b.expect(b.message("typed while the server was down")).to_have_count(1)
        a.expect(a.message("meanwhile 3")).to_have_count(1)
        expected = [
            "hello from behind the proxy",
            "hello over the websocket",
            "a reply to that",
            "message deleted",
            "typed while the server was down",
        ]
        for page in (a, b):
            shown = page.bodies()
            assert sorted(shown) == sorted([*expected, *(f"meanwhile {i}" for i in range(1, 4))])
            assert_in_order_once(page.messages())
        stored = [m["body"] for m in api.history(alice, room, limit=100) if not m["deleted"]]
        assert stored.count("typed while the server was down") == 1
        assert len(stored) == len(set(stored)) == 7
        a.shot("04-after-restart-on-the-fallback")

        # The proxy lets WebSockets through again: the page returns to the WebSocket.
        proxy.block = False
        a.expect("#conn").to_have_text("Online", timeout=15_000)
        a.expect("#conn").to_have_attribute("data-transport", "websocket")
        a.say("back on the websocket")
        b.expect(b.message("back on the websocket")).to_have_count(1)
        b.say("welcome back")
        a.expect(a.message("welcome back")).to_have_count(1)
        for page in (a, b):
            page.expect("#scroller .messages > li").to_have_count(10)
            assert_in_order_once(page.messages())
            assert {m["state"] for m in page.messages()} == {"sent"}
        a.shot("05-back-on-the-websocket")
    finally:
        problems = [p for page in pages for p in page.problems]
        for page in pages:
            page.context.close()
        api.close()
    assert not problems, problems


def test_admin_console_keeps_working_on_the_fallback(
    browser: Any, web_server: ServerProcess, proxy: WsBlockingProxy
) -> None:
    api = Api(web_server)
    boss = api.admin()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    console = FallbackPage(context, proxy.http)
    try:
        console.page.goto(proxy.http + "/admin")
        console.submit_sign_in(boss.name, boss.password)
        console.page.locator("#console-view").wait_for()
        console.expect("#conn").to_have_text(FALLBACK)
        console.expect("#banner").to_be_hidden()
        # Its REST views load as usual: who is online, the tasks.
        console.page.click("#online-refresh")
        console.expect("#online-status").not_to_have_text(re.compile("Loading|could not", re.I))
        console.expect("#tasks-title").to_be_visible()
        assert proxy.refused_upgrades >= 2
        # Tasks and alerts arrive live on the stream (the console does not poll them).
        r = api.client.post(
            "/api/tasks",
            json={"kind": "demo", "params": {"steps": 10, "delay": 0.05, "fail_at": 0.6}},
            headers=boss.headers,
        )
        assert r.status_code == 202, r.text
        task = console.page.locator(f'#task-list > li[data-id="{r.json()["id"]}"]')
        console.expect(task.locator(".status")).to_have_text("failed")
        console.expect(task.locator(".pct")).to_have_text("60 %")
        alert = console.page.locator("#alert-list > li.alert", has_text=r.json()["id"][:8])
        console.expect(alert).to_have_count(1)
        console.shot("06-admin-console")
        problems = list(console.problems)
    finally:
        context.close()
        api.close()
    assert not problems, problems
