"""The browser chat UI (`/`) in headless Chromium, driven by Playwright, against a real server.

Covers: register and sign in, two people chatting both ways with presence and typing,
user text rendered as text, history paged in as you scroll up, private rooms and
members, resuming after a reload and signing out, a phone-width window, and a server
restart mid-conversation (reconnect, resume with `since`, a truncated replay paged
with `after`, a message typed while the server was down delivered exactly once).

Screenshots of the main views land in `test-output/screenshots/` for review.
Chromium comes from the system (`/usr/bin/chromium`, or `CHAT_CHROMIUM`); nothing is
downloaded. Without it the module skips, or fails under `CHAT_REQUIRE_SERVICES=1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.browser import BrowserPage
from tests.conftest import ServerFactory
from tests.harness import Account, Api, ServerProcess, connect, join, say, unique

# The page and its flows, not the fan-out, are under test: one backend is enough (the
# two-process behaviour behind each frame has tests of its own).
pytestmark = [pytest.mark.browser, pytest.mark.one_backend]

TIMEOUT = 10_000  # ms, for every wait on the page
PASSWORD = "correct horse battery"


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web_server(module_servers: ServerFactory) -> ServerProcess:
    """Generous send limits (to seed history fast) and a tiny replay cap (to page gaps)."""
    return module_servers(send_rate=1000, send_burst=1000, replay_cap=3)


class ChatPage(BrowserPage):
    """One browser context (one person) on the chat page, with helpers that read like steps."""

    timeout = TIMEOUT

    # sign in

    def open(self) -> ChatPage:
        self.page.goto(self.base + "/")
        return self

    def sign_in(self, account: Account) -> ChatPage:
        self.open()
        self.submit_sign_in(account.name, account.password)
        self.page.locator("#chat-view").wait_for()
        return self

    def register(self, name: str, password: str = PASSWORD) -> ChatPage:
        self.open()
        self.page.locator("#signin-view").wait_for()
        self.page.click("#signin-switch")
        self.expect("#signin-title").to_have_text("Create an account")
        self.submit_sign_in(name, password)
        self.page.locator("#chat-view").wait_for()
        return self

    # rooms

    def room_button(self, room: str) -> Any:
        return self.page.locator(f'#room-list button[data-room="{room}"]')

    def open_room(self, room: str, me: str | None = None) -> ChatPage:
        """Click the room and wait until it is joined (we are in its presence list)."""
        button = self.room_button(room)
        button.wait_for(state="attached")
        if not button.is_visible():  # a phone: the room list is a drawer
            self.page.click("#toggle-rooms")
        button.click()
        self.expect("#room-title").to_have_text(f"# {room}")
        if me:
            self.expect("#presence-list").to_contain_text(me)
        self.expect(".history-status").not_to_have_text(re.compile("Loading"))
        return self

    def create_room(self, room: str, private: bool = False) -> ChatPage:
        self.page.fill("#new-room-name", room)
        self.page.set_checked("#new-room-private", private)
        self.page.click("#create-room-submit")
        self.expect("#room-title").to_have_text(f"# {room}")
        return self

    # messages

    def say(self, text: str) -> None:
        """Type a message and press Enter, as a person would."""
        box = self.page.locator("#message-input")
        box.fill(text)
        box.press("Enter")

    def messages(self) -> list[dict[str, Any]]:
        """The current room's messages, top to bottom."""
        result: list[dict[str, Any]] = self.page.evaluate(
            """() => [...document.querySelectorAll('#scroller .messages > li')].map(li => ({
                seq: li.dataset.seq === undefined ? null : Number(li.dataset.seq),
                state: li.dataset.state,
                author: li.querySelector('.msg-author').textContent,
                body: li.querySelector('.msg-body').textContent,
            }))"""
        )
        return result

    def bodies(self) -> list[str]:
        return [m["body"] for m in self.messages()]


ChatPages = Callable[..., ChatPage]


@pytest.fixture
def chat_pages(browser: Any, web_server: ServerProcess) -> Iterator[ChatPages]:
    """Open people (browser contexts) on the chat page; checks no script error or CSP hit."""
    opened: list[ChatPage] = []

    def make(width: int = 1280, height: int = 800, server: ServerProcess | None = None) -> ChatPage:
        context = browser.new_context(viewport={"width": width, "height": height})
        page = ChatPage(context, (server or web_server).http)
        opened.append(page)
        return page

    yield make
    problems = [p for page in opened for p in page.problems]
    for page in opened:
        page.context.close()
    assert not problems, problems


def seed(server: ServerProcess, account: Account, room: str, bodies: list[str]) -> None:
    """Post messages over a real WebSocket, each acknowledged before the next.

    Runs in a thread: Playwright's sync API already owns this thread's event loop.
    """

    async def run() -> None:
        ws = await connect(server, account.token)
        await join(ws, room)
        for body in bodies:
            await say(ws, room, body)
        await ws.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result(timeout=60)


def assert_in_order_once(messages: list[dict[str, Any]]) -> None:
    seqs = [m["seq"] for m in messages]
    assert None not in seqs, messages
    assert seqs == sorted(set(seqs)), f"duplicated or out of order: {seqs}"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"a gap: {seqs}"


# --- tests -------------------------------------------------------------------------------


def test_two_people_chat_with_presence_and_typing(chat_pages: ChatPages, web_api: Api) -> None:
    bob = web_api.user(unique("bob"))
    alice_name, room = unique("alice"), unique("lobby")

    sign_in = chat_pages().open()
    sign_in.page.locator("#signin-view").wait_for()
    sign_in.shot("01-sign-in")
    sign_in.submit_sign_in(bob.name, "not the password")
    sign_in.expect("#signin-error").to_have_text("Wrong username or password.")
    sign_in.shot("02-sign-in-error")

    alice = chat_pages().register(alice_name)
    alice.expect("#conn").to_have_text("Online")
    alice.create_room(room)
    alice.expect("#presence-list").to_contain_text(alice_name)

    bob_page = chat_pages().sign_in(bob).open_room(room, me=bob.name)
    alice.expect("#presence-list").to_contain_text(bob.name)
    bob_page.expect("#presence-list").to_contain_text(alice_name)

    # Typing shows on the other side only.
    bob_page.page.locator("#message-input").fill("hel")
    alice.expect("#typing").to_have_text(f"{bob.name} is typing…")
    bob_page.expect("#typing").to_have_text("")

    bob_page.say("hello alice")
    alice.expect(alice.message("hello alice")).to_have_count(1)
    alice.expect("#typing").to_have_text("")  # a message ends the typing notice
    bob_page.expect(bob_page.message("hello alice")).to_have_attribute("data-state", "sent")

    alice.say("hi bob!\nhow are things?")
    bob_page.expect(bob_page.message("hi bob!\nhow are things?")).to_have_count(1)
    alice.expect(alice.message("hi bob!\nhow are things?")).to_have_attribute("data-state", "sent")
    alice.say("the docs are at https://example.com/docs")
    bob_page.expect(bob_page.message("the docs are at https://example.com/docs")).to_have_count(1)

    for page in (alice, bob_page):
        shown = page.messages()
        assert [m["body"] for m in shown] == [
            "hello alice",
            "hi bob!\nhow are things?",
            "the docs are at https://example.com/docs",
        ]
        assert [m["author"] for m in shown] == [bob.name, alice_name, alice_name]
        assert_in_order_once(shown)
        page.expect("#scroller .messages time").to_have_count(3)
    # The URL became a safe link (new tab, no opener), not something that runs.
    link = bob_page.page.locator("#scroller .msg-body a")
    assert link.get_attribute("href") == "https://example.com/docs"
    assert "noopener" in (link.get_attribute("rel") or "")

    alice.page.locator("#message-input").fill("typing a reply…")
    bob_page.expect("#typing").to_have_text(f"{alice_name} is typing…")
    bob_page.shot("03-chat-two-people")
    alice.shot("04-chat-other-side")


def test_message_html_is_shown_as_text(chat_pages: ChatPages, web_api: Api) -> None:
    alice, bob = web_api.user(), web_api.user()
    room = web_api.room(alice)
    attack = "<img src=x onerror=window.__pwned=1>"
    script = "<script>window.__pwned=2</script><b>bold?</b>"
    a = chat_pages().sign_in(alice).open_room(room, me=alice.name)
    b = chat_pages().sign_in(bob).open_room(room, me=bob.name)

    a.say(attack)
    a.say(script)
    b.expect(b.message(script)).to_have_count(1)
    for page in (a, b):
        assert page.bodies() == [attack, script]
        assert page.page.locator("#scroller img, #scroller script, #scroller b").count() == 0
        page.page.wait_for_timeout(200)  # give a broken image's onerror time to fire
        assert page.page.evaluate("window.__pwned") is None


def test_scrolling_up_loads_older_history(
    chat_pages: ChatPages, web_api: Api, web_server: ServerProcess
) -> None:
    owner, reader = web_api.user(), web_api.user()
    room = web_api.room(owner)
    seed(web_server, owner, room, [f"history {i}" for i in range(1, 131)])

    page = chat_pages().sign_in(reader).open_room(room, me=reader.name)
    page.expect("#scroller .messages > li").to_have_count(50)  # one page, the newest
    assert page.bodies()[0] == "history 81"
    assert page.bodies()[-1] == "history 130"
    assert page.page.evaluate(
        "(() => { const s = document.getElementById('scroller');"
        " return s.scrollHeight - s.scrollTop - s.clientHeight < 50; })()"
    ), "a room opens scrolled to the newest message"

    scroller = page.page.locator("#scroller")
    scroller.hover()
    for _ in range(40):
        if page.page.locator("#scroller .messages > li").count() == 130:
            break
        page.page.mouse.wheel(0, -4000)
        page.page.wait_for_timeout(100)
    page.expect("#scroller .messages > li").to_have_count(130)
    page.expect(".history-status").to_have_text(f"This is the start of #{room}.")
    assert page.bodies() == [f"history {i}" for i in range(1, 131)]
    assert_in_order_once(page.messages())
    page.page.mouse.wheel(0, -4000)
    page.shot("05-history-start")


def test_private_room_members_reload_and_sign_out(chat_pages: ChatPages, web_api: Api) -> None:
    alice, bob = web_api.user(), web_api.user()
    room = unique("secret")
    a = chat_pages().sign_in(alice)
    a.create_room(room, private=True)
    a.expect("#room-badge").to_be_visible()
    a.expect("#add-member").to_be_visible()
    a.page.fill("#member-name", "nobody-by-that-name")
    a.page.click("#add-member-submit")
    a.expect("#add-member-status").to_have_text("There is no user called “nobody-by-that-name”.")
    a.page.fill("#member-name", bob.name)
    a.page.click("#add-member-submit")
    a.expect("#add-member-status").to_have_text(f"{bob.name} can now join #{room}.")
    a.say("welcome to the secret room")
    a.expect(a.message("welcome to the secret room")).to_have_attribute("data-state", "sent")
    a.shot("06-private-room-owner")

    b = chat_pages().sign_in(bob)
    b.expect(f'#room-list button[data-room="{room}"]').to_have_attribute(
        "aria-label", f"{room}, private room"
    )
    b.open_room(room, me=bob.name)
    b.expect("#add-member").to_be_hidden()  # only the owner adds members
    b.expect(b.message("welcome to the secret room")).to_have_count(1)

    # A reload resumes with the refresh token kept in sessionStorage: no sign-in form.
    b.page.reload()
    b.page.locator("#chat-view").wait_for()
    b.expect("#signin-view").to_be_hidden()
    b.expect("#room-title").to_have_text(f"# {room}")  # the room is remembered in the URL
    b.expect(b.message("welcome to the secret room")).to_have_count(1)
    b.expect("#conn").to_have_text("Online")

    b.page.click("#sign-out")
    b.expect("#signin-view").to_be_visible()
    b.expect("#signin-notice").to_have_text("You have signed out.")
    b.page.reload()
    b.expect("#signin-view").to_be_visible()  # nothing left to resume
    b.expect("#chat-view").to_be_hidden()
    a.expect("#conn").to_have_text("Online")  # the other person is unaffected


def test_phone_width(chat_pages: ChatPages, web_api: Api, web_server: ServerProcess) -> None:
    alice, bob = web_api.user(), web_api.user()
    room = web_api.room(alice, unique("phone"))
    web_api.room(alice, unique("another"))
    seed(
        web_server,
        bob,
        room,
        ["Are we still on for lunch?", "I found a place with a long, long name near the station"],
    )
    seed(web_server, alice, room, ["Yes! 12:30 works.", "See you there."])

    phone = chat_pages(width=375, height=740).sign_in(alice).open_room(room, me=alice.name)
    phone.expect("#scroller .messages > li").to_have_count(4)
    phone.expect("#sidebar").not_to_be_in_viewport()
    overflow = phone.page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 375, f"the page scrolls sideways at 375px ({overflow}px wide)"
    assert phone.page.evaluate("document.querySelector('.layout').scrollLeft") == 0
    phone.page.locator("#message-input").fill("On my way")
    phone.shot("07-phone-chat")

    phone.page.click("#toggle-rooms")
    phone.expect("#sidebar").to_be_in_viewport()
    phone.expect("#toggle-rooms").to_have_attribute("aria-expanded", "true")
    phone.page.wait_for_timeout(250)  # the drawer slides in
    phone.shot("08-phone-rooms")
    phone.page.keyboard.press("Escape")
    phone.expect("#sidebar").not_to_be_in_viewport()

    phone.page.click("#toggle-people")
    phone.expect("#people").to_be_in_viewport()
    phone.page.wait_for_timeout(250)
    phone.shot("09-phone-people")
    phone.page.click("#close-people")
    phone.expect("#people").not_to_be_in_viewport()


def test_server_restart_mid_conversation(
    chat_pages: ChatPages, web_api: Api, web_server: ServerProcess
) -> None:
    alice, bob = web_api.user(), web_api.user()
    room = web_api.room(alice)
    a = chat_pages().sign_in(alice).open_room(room, me=alice.name)
    b = chat_pages().sign_in(bob).open_room(room, me=bob.name)
    a.say("before the restart")
    b.expect(b.message("before the restart")).to_have_count(1)

    web_server.stop()  # SIGTERM: the server drains and closes every socket
    for page in (a, b):
        page.expect("#banner").to_contain_text("Reconnecting")
        page.expect("#conn").not_to_have_text("Online")
    a.shot("10-reconnecting")

    # Alice types while the server is down: the message waits in the queue.
    a.say("typed while the server was down")
    queued = a.message("typed while the server was down")
    a.expect(queued).to_have_attribute("data-state", "queued")
    a.expect(queued).to_contain_text("Waiting for connection")
    a.expect("#banner").to_contain_text("1 message is waiting")
    a.shot("11-queued-while-down")

    # Bob loses his network, so he misses everything until it is back.
    b.context.set_offline(True)
    b.expect("#banner").to_contain_text("offline")

    web_server.start()  # same port, same database
    a.expect("#conn").to_have_text("Online", timeout=20_000)
    a.expect("#banner").to_be_hidden()
    a.expect(queued).to_have_attribute("data-state", "sent")
    for i in range(1, 6):
        a.say(f"meanwhile {i}")
    a.expect(a.message("meanwhile 5")).to_have_attribute("data-state", "sent")

    # Bob comes back: rejoin with `since`, a replay truncated at 3, the rest paged.
    b.context.set_offline(False)
    b.expect("#conn").to_have_text("Online", timeout=20_000)
    b.expect(b.message("meanwhile 5")).to_have_count(1)

    expected = [
        "before the restart",
        "typed while the server was down",
        *[f"meanwhile {i}" for i in range(1, 6)],
    ]
    for page in (a, b):
        page.expect("#scroller .messages > li").to_have_count(len(expected))
        shown = page.messages()
        assert [m["body"] for m in shown] == expected
        assert {m["state"] for m in shown} == {"sent"}
        assert_in_order_once(shown)
    stored = [m["body"] for m in web_api.history(alice, room, limit=100)]
    assert stored.count("typed while the server was down") == 1
    assert list(reversed(stored)) == expected

    # And the conversation simply goes on.
    b.say("back again")
    a.expect(a.message("back again")).to_have_count(1)
    b.shot("12-after-restart")


def test_token_refresh_and_rate_limit(chat_pages: ChatPages, make_server: ServerFactory) -> None:
    # Access tokens live 6 s (refreshed after about 4: the margin holds on a loaded CI
    # machine) and sends are limited to a burst of 2, then 1 a second.
    server = make_server(access_token_ttl=6, send_rate=1, send_burst=2)
    api = Api(server)
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    api.close()
    a = chat_pages(server=server).sign_in(alice).open_room(room, me=alice.name)
    signed_in = time.monotonic()
    b = chat_pages(server=server).sign_in(bob).open_room(room, me=bob.name)

    # Faster than the limit: the person is told in plain words; nothing is lost or reordered.
    for i in range(1, 6):
        a.say(f"burst {i}")
    a.expect("#notices").to_contain_text("You are sending messages too fast")
    a.shot("13-rate-limited")
    b.expect(b.message("burst 5")).to_have_count(1)
    a.expect(a.message("burst 5")).to_have_attribute("data-state", "sent")
    for page in (a, b):
        assert page.bodies() == [f"burst {i}" for i in range(1, 6)]
        assert_in_order_once(page.messages())

    # Meanwhile the pages refreshed their tokens before they expired and re-authenticated
    # their open sockets, so the server never had to close one (it would, with 4001).
    a.page.wait_for_timeout(max(0, 8.5 - (time.monotonic() - signed_in)) * 1000)
    a.expect("#conn").to_have_text("Online")
    a.expect("#banner").to_be_hidden()
    log = server.log()
    assert log.count("POST /api/auth/refresh") >= 2
    accepted = log.count('"WebSocket /ws" [accepted]')
    assert accepted == 2, f"expected one socket per page and no reconnects, saw {accepted}"


def test_unsent_messages_survive_a_reload(chat_pages: ChatPages, web_api: Api) -> None:
    alice, bob = web_api.user(), web_api.user()
    room = web_api.room(alice)
    b = chat_pages().sign_in(bob).open_room(room, me=bob.name)
    a = chat_pages().sign_in(alice).open_room(room, me=alice.name)

    # Alice's WebSocket is cut (HTTP still works): every handshake is refused.
    cut = [True]

    def route(ws: Any) -> None:
        if cut[0]:
            ws.close(code=1011, reason="cut by the test")
        else:
            ws.connect_to_server()

    a.page.route_web_socket(re.compile(r".*/ws$"), route)
    a.page.reload()
    a.page.locator("#chat-view").wait_for()  # resumed with the refresh token
    a.expect("#banner").to_contain_text("Reconnecting")
    a.say("written offline, then the page was reloaded")
    pending = a.message("written offline, then the page was reloaded")
    a.expect(pending).to_have_attribute("data-state", "queued")

    a.page.reload()  # the queue is kept in sessionStorage, with its refs
    a.page.locator("#chat-view").wait_for()
    a.expect(pending).to_have_attribute("data-state", "queued")
    a.expect("#banner").to_contain_text("1 message is waiting")

    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    cut[0] = False
    # "Retry now", unless the page's own reconnect timer got there first (the button
    # then hides as it is clicked).
    with contextlib.suppress(PlaywrightTimeout):
        a.page.click("#retry-now", timeout=3000)
    a.expect("#conn").to_have_text("Online", timeout=20_000)
    a.expect(pending).to_have_attribute("data-state", "sent")
    b.expect(b.message("written offline, then the page was reloaded")).to_have_count(1)
    stored = [m["body"] for m in web_api.history(alice, room, limit=100)]
    assert stored == ["written offline, then the page was reloaded"]
    a.page.reload()  # nothing is sent twice after another reload
    a.expect(pending).to_have_attribute("data-state", "sent")
    a.expect(pending).to_have_count(1)
    assert [m["body"] for m in web_api.history(alice, room, limit=100)] == stored


def test_oversized_messages_are_refused_in_plain_words(chat_pages: ChatPages, web_api: Api) -> None:
    alice = web_api.user()
    room = web_api.room(alice)
    a = chat_pages().sign_in(alice).open_room(room, me=alice.name)

    box = a.page.locator("#message-input")
    box.fill("a" * 32_001)  # the server's default limit is 32,000 characters
    a.expect("#char-count").to_have_text("1 character too many")
    box.press("Enter")
    a.expect("#notices").to_contain_text("That message is too long")
    a.expect("#scroller .messages > li").to_have_count(0)

    # Within the character limit but over the frame limit (64 KiB) once UTF-8 encoded:
    # refused on the page rather than sent (which would get the socket closed, 1009).
    box.fill("€" * 30_000)
    box.press("Enter")
    failed = a.page.locator("#scroller .messages > li")
    a.expect(failed).to_have_attribute("data-state", "failed")
    a.expect(failed).to_contain_text("Not sent: That message is too large to send")
    a.expect("#conn").to_have_text("Online")
    failed.get_by_role("button", name="Discard").click()
    a.expect(failed).to_have_count(0)
    a.say("a normal message still works")
    a.expect(a.message("a normal message still works")).to_have_attribute("data-state", "sent")
