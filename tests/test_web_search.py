"""Message search in the browser chat (issue 11), in headless Chromium against a real
server: a person types in the search box, sees the results with room, author, time and
the matching words marked (as text: markup in a message stays text), clicks one and
lands in its room at that message, with the history between loaded; a query with
nothing to search for is explained. Screenshots: `test-output/screenshots/search-*.png`.
"""

from __future__ import annotations

import asyncio
import random
import re
import string
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.browser import ChatPerson
from tests.conftest import ServerFactory
from tests.dbseed import seed_messages
from tests.harness import Api, ServerProcess, unique

pytestmark = [pytest.mark.browser, pytest.mark.one_backend]

TIMEOUT = 10_000  # ms, for every wait on the page


@pytest.fixture(scope="module")
def web_server(module_servers: ServerFactory) -> ServerProcess:
    return module_servers()


class Person(ChatPerson):
    timeout = TIMEOUT
    shot_prefix = "search-"

    def search(self, text: str) -> None:
        box = self.page.locator("#search-input")
        box.fill(text)
        box.press("Enter")


@pytest.fixture
def person(browser: Any, web_server: ServerProcess) -> Iterator[Person]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = Person(context, web_server.http)
    yield opened
    context.close()
    assert not opened.problems, opened.problems


def seed(server: ServerProcess, room: str, author: str, bodies: list[str]) -> None:
    """Store messages directly (in a thread: Playwright owns this loop)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, seed_messages(server.database_url, room, author, bodies)).result()


def test_search_then_jump_to_the_message_in_its_room(
    person: Person, web_server: ServerProcess, web_api: Api
) -> None:
    alice, bob = web_api.user(unique("alice")), web_api.user(unique("bob"))
    room, other = web_api.room(alice), web_api.room(bob)
    w = "".join(random.choices(string.ascii_lowercase, k=10))
    target = f"the <b>quarterly</b> {w} report is ready"
    # The match is old: 150 newer messages stand between it and the end of the room.
    seed(web_server, room, alice.name, ["earlier chatter"] * 5 + [target])
    seed(web_server, room, alice.name, [f"later message {i}" for i in range(150)])

    p = person.sign_in(bob)
    p.page.locator(f'#room-list button[data-room="{other}"]').click()
    p.expect("#room-title").to_have_text(f"# {other}")
    p.search(f"Quarterly {w.upper()}")
    result = p.page.locator("#search-results .search-item")
    p.expect(result).to_have_count(1)
    p.expect(result.locator(".search-where")).to_have_text(f"#{room}")
    p.expect(result.locator(".search-who")).to_have_text(alice.name)
    p.expect(result.locator("time")).to_have_count(1)
    # The snippet is the text, its matching words marked; the markup stays text.
    p.expect(result.locator(".search-snippet")).to_have_text(target)
    p.expect(result.locator("mark")).to_have_text(["quarterly", w])
    p.expect(result.locator("b")).to_have_count(0)
    p.shot("01-results")

    result.locator("button").click()
    p.expect("#search-panel").to_be_hidden()
    p.expect("#room-title").to_have_text(f"# {room}")
    message = p.page.locator("#scroller .messages > li").filter(
        has=p.page.locator(".msg-body", has_text=re.compile(f"^{re.escape(target)}$"))
    )
    p.expect(message).to_be_in_viewport()
    p.expect(message).to_have_class(re.compile("highlight"))
    # History around it is there: the messages just before and after.
    p.expect(p.page.locator(".msg-body", has_text="earlier chatter").last).to_be_attached()
    p.expect(
        p.page.locator(".msg-body", has_text=re.compile("^later message 0$"))
    ).to_be_in_viewport()
    p.shot("02-jumped")

    # Nothing found, and nothing to search for: said in words.
    p.search(f"{w} nonexistentword")
    p.expect("#search-status").to_have_text(re.compile("No messages match"))
    p.expect(p.page.locator("#search-results .search-item")).to_have_count(0)
    p.search("!!! 🙂")
    p.expect("#search-status").to_have_text(re.compile("Could not search.*at least one word"))
    p.shot("03-refused")
    p.page.locator("#search-input").press("Escape")
    p.expect("#search-panel").to_be_hidden()
