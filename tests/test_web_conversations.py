"""The browser chat's conversations (issue 10) in headless Chromium, against a real server.

Covers, as people would do it, between two (or three) browser contexts: starting a
direct message from a name (with a display name set in the profile), replying,
reacting (seen live on the other side, chips toggled), editing and deleting (seen
live; a deleted message keeps its place), unread badges that come back after a reload
and follow the other tabs' reading, the notification bell receiving a mention typed
with `@` completion and its inbox opening the message, the room settings (topic,
members, removing someone, archiving) applied live, a refusal from the server shown on
the message it was about, and the browser's own notifications (only once asked for,
only while the tab is hidden).

Screenshots land in `test-output/screenshots/` (prefix `conv-`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.browser import ChatPerson
from tests.conftest import ServerFactory
from tests.harness import (
    Account,
    Api,
    ServerProcess,
    commit_unpublished_edit,
    connect,
    join,
    say,
    unique,
)

# The page and its flows, not the fan-out, are under test: one backend is enough (the
# two-process behaviour behind each frame has tests of its own).
pytestmark = [pytest.mark.browser, pytest.mark.one_backend]

TIMEOUT = 10_000  # ms, for every wait on the page


@pytest.fixture(scope="module")
def web_server(module_servers: ServerFactory) -> ServerProcess:
    return module_servers(send_rate=1000, send_burst=1000)


class Person(ChatPerson):
    """One person (a browser context) on the chat page."""

    timeout = TIMEOUT
    shot_prefix = "conv-"

    def room_button(self, room: str) -> Any:
        return self.page.locator(f'#room-list button[data-room="{room}"]')

    def open_room(self, room: str) -> Person:
        self.room_button(room).click()
        self.expect("#room-title").to_have_text(f"# {room}")
        self.expect(".history-status").not_to_have_text(re.compile("Loading"))
        return self

    def say(self, text: str) -> None:
        box = self.page.locator("#message-input")
        box.fill(text)
        box.press("Enter")

    def badge(self, room: str) -> Any:
        return self.room_button(room).locator(".unread")


People = Callable[[], Person]


@pytest.fixture
def people(browser: Any, web_server: ServerProcess) -> Iterator[People]:
    """Open people on the chat page; checks that no script error or CSP hit happened."""
    opened: list[Person] = []

    def make() -> Person:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        person = Person(context, web_server.http)
        opened.append(person)
        return person

    yield make
    problems = [p for person in opened for p in person.problems]
    for person in opened:
        person.context.close()
    assert not problems, problems


def seed(server: ServerProcess, account: Account, room: str, bodies: list[str]) -> None:
    """Post messages over a real WebSocket (in a thread: Playwright owns this loop)."""

    async def run() -> None:
        ws = await connect(server, account.token)
        await join(ws, room)
        for body in bodies:
            await say(ws, room, body)
        await ws.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result(timeout=60)


# --- tests ---------------------------------------------------------------------------------


def test_direct_message_from_a_name(people: People, web_api: Api) -> None:
    alice, bob = web_api.user(unique("alice")), web_api.user(unique("bob"))
    web_api.room(alice)  # somewhere to land

    a = people().sign_in(alice)
    # Alice sets the name people see.
    a.page.click("#profile-btn")
    a.page.fill("#display-name", "Alice Liddell")
    a.page.click("#profile-save")
    a.expect("#profile-status").to_have_text("Saved. Others see this name from now on.")
    a.page.click("#profile-close")
    a.expect("#me-name").to_have_text("Alice Liddell")

    # She finds Bob by the start of his name and opens a conversation.
    a.page.fill("#dm-search", bob.name[:-3])
    result = a.page.locator(f'#dm-results button[data-user="{bob.name}"]')
    result.click()
    a.expect("#room-title").to_have_text(f"@ {bob.name}")
    a.expect("#dm-search").to_have_value("")
    dm = a.page.locator("#dm-list button[aria-current=page]")
    a.expect(dm).to_have_text(re.compile(re.escape(bob.name)))
    dm_room = dm.get_attribute("data-room")
    assert dm_room
    a.say("hi Bob, just between us")
    a.expect(a.message("hi Bob, just between us")).to_have_attribute("data-state", "sent")
    a.shot("01-dm-started")

    # Bob sees the conversation under Alice's display name, with one unread message.
    b = people().sign_in(bob)
    b_dm = b.page.locator(f'#dm-list button[data-room="{dm_room}"]')
    b.expect(b_dm).to_contain_text("Alice Liddell")
    b.expect(b_dm.locator(".unread")).to_have_text("1")
    assert b.page.locator(f'#room-list button[data-room="{dm_room}"]').count() == 0
    b_dm.click()
    b.expect("#room-title").to_have_text("@ Alice Liddell")
    b.expect(b.message("hi Bob, just between us")).to_have_count(1)
    b.expect(b.message("hi Bob, just between us").locator(".msg-author")).to_have_text(
        "Alice Liddell"
    )
    b.expect(b_dm.locator(".unread")).to_have_count(0)

    # And they talk both ways, live.
    b.say("hello Alice!")
    a.expect(a.message("hello Alice!")).to_have_count(1)
    a.say("see you at noon")
    b.expect(b.message("see you at noon")).to_have_count(1)
    b.shot("02-dm-peer")

    # Nobody else can be added to a DM: the UI offers no member form there.
    b.expect("#add-member").to_be_hidden()


def test_reply_react_edit_and_delete_seen_live(people: People, web_api: Api) -> None:
    alice, bob = web_api.user(unique("alice")), web_api.user(unique("bob"))
    room = web_api.room(alice)
    a = people().sign_in(alice).open_room(room)
    b = people().sign_in(bob).open_room(room)

    b.say("lunch at the usual place?")
    a.expect(a.message("lunch at the usual place?")).to_have_count(1)

    # Reply: the composer shows what is answered; both sides show the quote.
    a.act("lunch at the usual place?", "Reply")
    a.expect("#reply-bar").to_be_visible()
    a.expect("#reply-label").to_have_text(f"Replying to {bob.name}:")
    a.expect("#reply-excerpt").to_have_text("lunch at the usual place?")
    a.shot("03-replying")
    a.say("yes, 12:30")
    a.expect("#reply-bar").to_be_hidden()
    for person in (a, b):
        answer = person.message("yes, 12:30")
        person.expect(answer).to_have_attribute("data-state", "sent")
        person.expect(answer.locator(".msg-reply")).to_contain_text("lunch at the usual place?")
        person.expect(answer.locator(".msg-reply-author")).to_have_text(bob.name)

    # React: Alice picks 👍 on Bob's message; Bob sees it live and adds his own.
    a.act("lunch at the usual place?", "React")
    a.message("lunch at the usual place?").get_by_role("button", name="React with 👍").click()
    chip_b = b.message("lunch at the usual place?").locator('.reaction[data-emoji="👍"]')
    b.expect(chip_b.locator(".reaction-count")).to_have_text("1")
    b.expect(chip_b).to_have_attribute("title", alice.name)
    b.expect(chip_b).to_have_attribute("aria-pressed", "false")
    chip_b.click()
    chip_a = a.message("lunch at the usual place?").locator('.reaction[data-emoji="👍"]')
    a.expect(chip_a.locator(".reaction-count")).to_have_text("2")
    a.expect(chip_a).to_have_attribute("aria-pressed", "true")
    b.expect(chip_b).to_have_attribute("aria-pressed", "true")
    a.shot("04-reactions")
    chip_a.click()  # Alice takes hers back
    b.expect(chip_b.locator(".reaction-count")).to_have_text("1")
    b.expect(chip_b).to_have_attribute("title", bob.name)

    # Edit: only the author gets the button; the change shows on both sides at once.
    a.message("lunch at the usual place?").hover()
    a.expect(a.message("lunch at the usual place?").locator(".act-edit")).to_have_count(0)
    b.act("lunch at the usual place?", "Edit")
    editor = b.page.locator(".msg-editor textarea")
    editor.fill("lunch at the new place?")
    editor.press("Enter")
    edited = a.message("lunch at the new place?")
    a.expect(edited).to_have_count(1)
    a.expect(edited.locator(".msg-edited")).to_be_visible()
    b.expect(b.message("lunch at the new place?").locator(".msg-edited")).to_be_visible()
    a.expect(a.message("lunch at the usual place?")).to_have_count(0)
    for person in (a, b):  # the quote in the reply follows
        quote = person.message("yes, 12:30").locator(".msg-reply-excerpt")
        person.expect(quote).to_have_text("lunch at the new place?")
    a.shot("05-edited")

    # Delete (two clicks): the message keeps its place, its text is gone everywhere,
    # quotes of it included.
    seq = b.message("lunch at the new place?").get_attribute("data-seq")
    b.act("lunch at the new place?", "Delete")
    b.message("lunch at the new place?").get_by_role("button", name="Really delete?").click()
    for person in (a, b):
        gone = person.page.locator(f'#scroller .messages > li[data-seq="{seq}"]')
        person.expect(gone).to_have_attribute("data-deleted", "true")
        person.expect(gone.locator(".msg-body")).to_have_text("message deleted")
        person.expect(gone.locator(".reaction")).to_have_count(0)
        quote = person.message("yes, 12:30").locator(".msg-reply-excerpt")
        person.expect(quote).to_have_text("message deleted")
        bodies = person.page.locator("#scroller .messages > li .msg-body").all_text_contents()
        assert bodies == ["message deleted", "yes, 12:30"], bodies
    a.shot("06-deleted")

    # What the server stores agrees with what both pages show.
    stored = {m["seq"]: m for m in web_api.history(alice, room, limit=10)}
    assert stored[int(seq)]["deleted"] is True and stored[int(seq)]["body"] == ""


def test_unread_badges_survive_a_reload_and_follow_other_tabs(
    people: People, web_api: Api, web_server: ServerProcess
) -> None:
    alice, bob = web_api.user(), web_api.user()
    here, busy = web_api.room(alice, unique("here")), web_api.room(alice, unique("busy"))
    b = people().sign_in(bob).open_room(here)

    seed(web_server, alice, busy, ["one", "two", "three"])
    b.page.reload()  # the counts come from the server
    b.page.locator("#chat-view").wait_for()
    b.expect(b.badge(busy)).to_have_text("3")
    news = b.room_button(busy).get_attribute("aria-describedby")
    b.expect(b.page.locator(f"#{news}")).to_have_text("3 unread")
    b.expect(b.badge(here)).to_have_count(0)
    b.shot("07-unread-after-reload")

    # Opening the room reads it; a reload keeps it read.
    b.open_room(busy)
    b.expect(b.message("three")).to_have_count(1)
    b.expect(b.badge(busy)).to_have_count(0)
    b.page.wait_for_timeout(1200)  # the `read` frame is sent at most every 0.8 s
    b.page.reload()
    b.page.locator("#chat-view").wait_for()
    b.expect(b.message("three")).to_have_count(1)
    b.open_room(here)
    b.expect(b.badge(busy)).to_have_count(0)

    # Live: new messages in a joined room that is not on screen raise its badge.
    seed(web_server, alice, busy, ["four", "five"])
    b.expect(b.badge(busy)).to_have_text("2")

    # Bob reads them in another tab: this tab's badge follows (`read` frames).
    other = people().sign_in(bob).open_room(busy)
    other.expect(other.message("five")).to_have_count(1)
    b.expect(b.badge(busy)).to_have_count(0)
    b.page.reload()
    b.page.locator("#chat-view").wait_for()
    b.expect(b.room_button(busy)).to_be_visible()
    b.expect(b.badge(busy)).to_have_count(0)


def test_notification_bell_gets_a_mention_and_the_inbox_opens_it(
    people: People, web_api: Api
) -> None:
    alice, bob = web_api.user(unique("alice")), web_api.user(unique("bob"))
    room, elsewhere = web_api.room(alice), web_api.room(bob)
    b = people().sign_in(bob).open_room(elsewhere)
    b.expect("#bell-count").to_be_hidden()
    a = people().sign_in(alice).open_room(room)

    # `@` and the start of a name suggests people; Enter takes the suggestion.
    box = a.page.locator("#message-input")
    box.fill("")
    box.press_sequentially(f"look @{bob.name[:-2]}", delay=20)
    option = a.page.locator(f'#mention-list li[data-user="{bob.name}"]')
    a.expect(option).to_be_visible()
    a.shot("08-mention-completion")
    box.press("Enter")
    a.expect(box).to_have_value(f"look @{bob.name} ")
    box.press_sequentially("the minutes are up", delay=5)
    box.press("Enter")
    body = f"look @{bob.name} the minutes are up"
    a.expect(a.message(body)).to_have_attribute("data-state", "sent")

    # Bob's bell counts it live, and the inbox lists it.
    b.expect("#bell-count").to_have_text("1")
    b.expect("#bell").to_have_attribute("aria-label", "Notifications, 1 unread")
    b.page.click("#bell")
    item = b.page.locator("#inbox-list .inbox-item").first
    b.expect(item).to_contain_text(f"{alice.name} mentioned you in #{room}")
    b.expect(item).to_contain_text(body)
    b.expect(item).to_have_class(re.compile("is-unread"))
    b.shot("09-inbox")

    # Clicking it opens the room at that message.
    item.locator("button").click()
    b.expect("#inbox").to_be_hidden()
    b.expect("#room-title").to_have_text(f"# {room}")
    b.expect(b.message(body)).to_be_in_viewport()

    # Mark all read: the count goes, and stays gone after a reload.
    b.page.click("#bell")
    b.page.click("#inbox-mark-read")
    b.expect("#bell-count").to_be_hidden()
    b.expect(b.page.locator("#inbox-list .inbox-item.is-unread")).to_have_count(0)
    b.page.reload()
    b.page.locator("#chat-view").wait_for()
    b.expect("#conn").to_have_text("Online")
    b.expect("#bell-count").to_be_hidden()
    b.page.click("#bell")
    b.expect(b.page.locator("#inbox-list .inbox-item")).to_have_count(1)


def test_room_settings_topic_remove_and_archive(people: People, web_api: Api) -> None:
    alice, bob = web_api.user(), web_api.user()
    room = web_api.room(alice, private=True)
    added = web_api.client.post(
        f"/api/rooms/{room}/members", json={"username": bob.name}, headers=alice.headers
    )
    assert added.status_code in (200, 201), added.text
    a = people().sign_in(alice).open_room(room)
    b = people().sign_in(bob).open_room(room)

    # The owner sets a topic; Bob's header shows it at once.
    a.page.click("#room-settings-btn")
    a.expect("#members-list").to_contain_text(bob.name)
    a.page.fill("#topic-input", "Plans for the launch")
    a.page.click("#topic-save")
    a.expect("#settings-status").to_have_text("Topic saved.")
    b.expect("#room-meta").to_contain_text("Plans for the launch")
    a.shot("10-room-settings")

    # Bob, not the owner, sees the settings read-only, and can mute the room.
    b.page.click("#room-settings-btn")
    b.expect("#topic-save").to_be_hidden()
    b.expect("#archive-toggle").to_be_hidden()
    b.expect(b.page.locator("#members-list button")).to_have_count(0)
    b.page.check('#notify-level input[value="nothing"]')
    b.expect("#settings-status").to_contain_text("muted")
    b.page.click("#settings-close")

    # Archive: read-only for everyone, live.
    a.page.click("#archive-toggle")
    a.expect("#settings-status").to_contain_text("archived")
    b.expect("#archived-note").to_be_visible()
    b.expect("#message-input").to_be_disabled()
    a.page.click("#archive-toggle")
    b.expect("#message-input").to_be_enabled()

    # Removing Bob: his page lets go of the room at once.
    a.page.locator("#members-list li", has_text=bob.name).get_by_role("button").click()
    a.expect("#members-list").not_to_contain_text(bob.name)
    b.expect("#notices").to_contain_text("You are no longer a member")
    b.expect(b.room_button(room)).to_have_count(0)
    a.page.click("#settings-close")
    a.say("bob is gone")
    a.expect(a.message("bob is gone")).to_have_attribute("data-state", "sent")
    b.shot("11-removed")


def test_a_refused_edit_is_explained_on_the_message(people: People, web_api: Api) -> None:
    alice, bob = web_api.user(), web_api.user()
    room = web_api.room(alice)
    a = people().sign_in(alice).open_room(room)
    b = people().sign_in(bob).open_room(room)
    b.say("draft of the plan")
    a.expect(a.message("draft of the plan")).to_have_count(1)

    # Bob starts editing; meanwhile Alice archives the room, so the server refuses it.
    b.act("draft of the plan", "Edit")
    editor = b.page.locator(".msg-editor textarea")
    editor.fill("final plan")
    a.page.click("#room-settings-btn")
    a.page.click("#archive-toggle")
    b.expect("#archived-note").to_be_visible()
    editor.press("Enter")
    mine = b.message("draft of the plan")
    b.expect(mine.locator(".msg-status")).to_have_text(
        re.compile(r"^Could not edit the message: The room is archived")
    )
    b.expect("#notices").to_contain_text("Could not edit the message")
    b.expect("#conn").to_have_text("Online")  # a refusal, not a dropped connection
    b.shot("12-refused-edit")
    a.expect(a.message("draft of the plan")).to_have_count(1)  # unchanged for everyone


NOTIFICATION_STUB = """
window.__asked = 0;
window.__shown = [];
window.Notification = class {
  static permission = "default";
  static async requestPermission() {
    window.__asked += 1;
    window.Notification.permission = "granted";
    return "granted";
  }
  constructor(title, options) { window.__shown.push({ title, body: options.body }); }
  addEventListener() {}
  close() {}
};
"""


def test_browser_notifications_only_after_the_person_asked(people: People, web_api: Api) -> None:
    alice, bob = web_api.user(unique("alice")), web_api.user(unique("bob"))
    web_api.room(alice)
    b = people()
    # The browser's Notification API, recorded (the page cannot tell it from the real one).
    b.context.add_init_script(NOTIFICATION_STUB)
    b.sign_in(bob)
    assert b.page.evaluate("window.__asked") == 0, "asked for permission on load"

    b.page.click("#bell")
    b.expect("#desktop-notify").to_have_text("Show desktop notifications")
    b.page.click("#desktop-notify")
    b.expect("#desktop-notify").to_have_text("Stop desktop notifications")
    assert b.page.evaluate("window.__asked") == 1
    b.page.click("#inbox-close")

    a = people().sign_in(alice)
    a.page.fill("#dm-search", bob.name)
    a.page.locator(f'#dm-results button[data-user="{bob.name}"]').click()
    a.expect("#room-title").to_have_text(f"@ {bob.name}")

    # While Bob's tab is visible, the bell is enough.
    a.say("are you there?")
    b.expect("#bell-count").to_have_text("1")
    assert b.page.evaluate("window.__shown.length") == 0

    # Hidden: the browser shows it, as text.
    b.page.evaluate(
        "Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true})"
    )
    a.say("<b>ping</b> when you are back")
    b.expect("#bell-count").to_have_text("2")
    shown = b.page.evaluate("window.__shown")
    assert shown == [
        {"title": f"{alice.name} sent you a message", "body": "<b>ping</b> when you are back"}
    ]


def test_changes_made_while_away_arrive_after_the_reconnect(
    people: People, web_api: Api, web_server: ServerProcess
) -> None:
    alice, bob = web_api.user(), web_api.user()
    room = web_api.room(alice)
    b = people()
    # Bob's socket goes through the test, which can cut it (HTTP still works).
    sockets: list[Any] = []
    cut = [False]

    def route(ws: Any) -> None:
        if cut[0]:
            ws.close(code=1011, reason="cut by the test")
        else:
            ws.connect_to_server()
            sockets.append(ws)

    b.page.route_web_socket(re.compile(r".*/ws$"), route)
    b.sign_in(bob).open_room(room)
    a = people().sign_in(alice).open_room(room)
    for body in ("first words", "second words", "third words"):
        a.say(body)
    b.expect(b.message("third words")).to_have_count(1)

    cut[0] = True
    sockets[-1].close(code=1011, reason="cut by the test")
    b.expect("#banner").to_contain_text("Reconnecting")

    # While Bob is away: an edit, a delete, a reaction and a new message.
    a.act("first words", "Edit")
    editor = a.page.locator(".msg-editor textarea")
    editor.fill("first words, corrected")
    editor.press("Enter")
    a.expect(a.message("first words, corrected").locator(".msg-edited")).to_be_visible()
    a.act("second words", "Delete")
    a.message("second words").get_by_role("button", name="Really delete?").click()
    a.expect(a.page.locator('#scroller li[data-deleted="true"]')).to_have_count(1)
    a.act("third words", "React")
    a.message("third words").get_by_role("button", name="React with 🎉").click()
    a.expect(a.message("third words").locator('.reaction[data-emoji="🎉"]')).to_have_count(1)
    a.say("fourth words")
    a.expect(a.message("fourth words")).to_have_attribute("data-state", "sent")
    # And an edit whose event never went out (its process died after the commit), made
    # "when" message 1 was the newest: only `changes_after` finds it for Bob.
    lost = commit_unpublished_edit(web_server, room, 3, "third words, quietly", at_seq=1)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, lost).result()

    # Back: the rejoin with `since` and `changes_after` brings the message and every change.
    cut[0] = False
    b.page.click("#retry-now")
    b.expect("#conn").to_have_text("Online")
    b.expect(b.message("fourth words")).to_have_count(1)
    b.expect(b.message("first words, corrected").locator(".msg-edited")).to_be_visible()
    third = b.message("third words, quietly")
    b.expect(third.locator('.reaction[data-emoji="🎉"]')).to_have_attribute("title", alice.name)
    b.expect(third.locator(".msg-edited")).to_be_visible()
    bodies = b.page.locator("#scroller .messages > li .msg-body").all_text_contents()
    assert bodies == [
        "first words, corrected",
        "message deleted",
        "third words, quietly",
        "fourth words",
    ]
    b.shot("13-changes-after-reconnect")


def test_leaving_a_private_room(people: People, web_api: Api) -> None:
    alice, bob = web_api.user(), web_api.user()
    room = web_api.room(alice, private=True)
    added = web_api.client.post(
        f"/api/rooms/{room}/members", json={"username": bob.name}, headers=alice.headers
    )
    assert added.status_code in (200, 201), added.text
    a = people().sign_in(alice).open_room(room)
    a.page.click("#room-settings-btn")
    a.expect("#leave-room").to_be_hidden()  # the owner cannot leave their room
    a.page.click("#settings-close")

    b = people().sign_in(bob).open_room(room)
    b.page.click("#room-settings-btn")
    b.page.click("#leave-room")
    b.expect("#settings").to_be_hidden()
    b.expect("#notices").to_contain_text(f"You left #{room}.")
    b.expect(b.room_button(room)).to_have_count(0)
    a.page.click("#room-settings-btn")
    a.expect("#members-list li").to_have_count(1)  # only Alice now
    b.page.reload()  # the server agrees: the room is not Bob's to read any more
    b.page.locator("#chat-view").wait_for()
    b.expect("#conn").to_have_text("Online")
    b.expect(b.room_button(room)).to_have_count(0)
