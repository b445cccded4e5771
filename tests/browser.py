"""Headless Chromium for the browser tests (`test_web_chat`, `test_web_admin`), via Playwright.

Chromium comes from the system (`/usr/bin/chromium`, or `CHAT_CHROMIUM`); nothing is
downloaded. Without it (or without Playwright) the caller skips, or fails under
`CHAT_REQUIRE_SERVICES=1`. Screenshots land in `test-output/screenshots/`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from tests.conftest import need_service
from tests.harness import ROOT, Account

CHROMIUM = Path(os.environ.get("CHAT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = ROOT / "test-output" / "screenshots"


@contextlib.contextmanager
def launch_chromium(timeout: int) -> Iterator[Any]:
    """The system Chromium, with Playwright's `expect` waiting `timeout` ms."""
    need_service("Chromium", CHROMIUM.exists(), f"{CHROMIUM} is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_service("Playwright", False, "the playwright package is not installed")
        raise
    with sync_playwright() as pw:
        from playwright.sync_api import expect

        expect.set_options(timeout=timeout)
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class BrowserPage:
    """One browser context on one page; script errors and CSP hits collect in `problems`.

    Subclasses set `timeout` (ms, for every wait on the page), and for `shot` the file
    name prefix and whether a screenshot takes the full page by default.
    """

    timeout = 10_000
    shot_prefix = ""
    full_page_shots = False

    def __init__(self, context: Any, base: str) -> None:
        self.context = context
        self.base = base
        self.page = context.new_page()
        self.page.set_default_timeout(self.timeout)
        self.problems: list[str] = []
        self.page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))
        self.page.on("console", self._console)

    def _console(self, message: Any) -> None:
        text = message.text
        if message.type == "error" and ("Content Security Policy" in text or "Uncaught" in text):
            self.problems.append(f"console: {text}")

    def submit_sign_in(self, name: str, password: str) -> None:
        """Fill and submit the sign-in form both pages share (web/shared/signin.js)."""
        self.page.locator("#signin-view").wait_for()
        self.page.fill("#signin-username", name)
        self.page.fill("#signin-password", password)
        self.page.click("#signin-submit")

    def expect(self, target: Any) -> Any:
        """Playwright's `expect` for a selector string or a locator."""
        from playwright.sync_api import expect

        return expect(self.page.locator(target) if isinstance(target, str) else target)

    def message(self, body: str) -> Any:
        """On the chat page: the list item of the message whose text is exactly `body`."""
        return self.page.locator("#scroller .messages > li").filter(
            has=self.page.locator(".msg-body", has_text=re.compile(f"^{re.escape(body)}$"))
        )

    def act(self, body: str, action: str) -> None:
        """On the chat page: use a button of a message's toolbar (it shows on hover)."""
        item = self.message(body)
        item.hover()
        item.locator(".msg-actions").get_by_role("button", name=action, exact=True).click()

    def shot(self, name: str, full_page: bool | None = None) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        if full_page is None:
            full_page = self.full_page_shots
        path = SHOTS / f"{self.shot_prefix}{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)


class ChatPerson(BrowserPage):
    """One person on the chat page (`/`), signed in and online."""

    def sign_in(self, account: Account) -> Self:
        self.page.goto(self.base + "/")
        self.submit_sign_in(account.name, account.password)
        self.page.locator("#chat-view").wait_for()
        self.expect("#conn").to_have_text("Online")
        return self
