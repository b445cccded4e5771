"""The notification inbox over HTTP, and what a resuming client already delivered.

`Inbox` wraps `GET /api/notifications?after=ID`, `POST /api/notifications/read` and
`POST /api/notifications`. `NotificationCursor` remembers the notifications a
`ChatClient` has delivered, so that after a reconnect it pages exactly the ones it
missed (ids increase per user) and drops a live frame it already took from a page.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from chat_client.api import HttpApi
from chat_client.errors import ChatClientError
from chat_client.protocol import NotificationFrame

__all__ = ["PAGE", "Inbox", "NotificationCursor", "NotificationPage"]

PAGE: Final = 100  # notifications asked for per request when catching up
_RECENT: Final = 1024  # ids remembered to drop repeats (live frames may cross)


@dataclass(frozen=True)
class NotificationPage:
    """One page of the inbox, oldest first, and how many notifications are unread."""

    items: list[NotificationFrame]
    unread: int


class Inbox:
    """The caller's notifications, through `api` (the token decides whose)."""

    def __init__(self, api: HttpApi) -> None:
        self._api = api

    async def page(self, after: int = 0, limit: int = PAGE) -> NotificationPage:
        """The notifications with an id above `after`, oldest first, at most `limit`."""
        answer = await self._api.request(
            "GET", "/api/notifications", params={"after": after, "limit": limit}
        )
        try:
            items = [NotificationFrame.model_validate(i, strict=False) for i in answer["items"]]
            unread = int(answer.get("unread", 0))
        except (ValidationError, KeyError, TypeError, ValueError) as exc:
            raise ChatClientError(f"unexpected answer to GET /api/notifications: {exc}") from None
        return NotificationPage(sorted(items, key=lambda n: n.id), unread)

    async def mark_read(self, upto: int) -> int | None:
        """Mark every notification up to id `upto` read; the unread count left, if told."""
        answer = await self._api.request("POST", "/api/notifications/read", json={"upto": upto})
        unread = answer.get("unread") if isinstance(answer, dict) else None
        return unread if isinstance(unread, int) else None

    async def notify(
        self, username: str, title: str, body: str, link: str | None = None
    ) -> NotificationFrame:
        """Send `username` a notification of kind `app` (admins and bots); returns it."""
        payload: dict[str, Any] = {"username": username, "title": title, "body": body}
        if link is not None:
            payload["link"] = link
        answer = await self._api.request("POST", "/api/notifications", json=payload)
        try:
            return NotificationFrame.model_validate(answer, strict=False)
        except ValidationError as exc:
            raise ChatClientError(f"unexpected answer to POST /api/notifications: {exc}") from None


class NotificationCursor:
    """The highest notification id delivered, and the recent ids, to deliver each once.

    `last` is None until the first `hello` when the client was not told where to
    resume: then it starts at the server's newest (only new notifications are live).
    """

    def __init__(self, after: int | None = None) -> None:
        self.last = after
        self._recent: OrderedDict[int, None] = OrderedDict()

    def behind(self, newest_on_server: int) -> bool:
        """On a new connection: whether notifications after `last` are to be paged.

        The first connection of a client not told where to resume starts at the
        server's newest instead.
        """
        if self.last is None:
            self.last = newest_on_server
            return False
        return newest_on_server > self.last

    def take(self, frame: NotificationFrame, *, paged: bool = False) -> bool:
        """Whether `frame` is new (then it counts as delivered).

        A live frame is new unless already delivered (from a page, or crossing);
        a paged one also must be above `last` (pages may reach back further).
        """
        if frame.id in self._recent or (paged and self.last is not None and frame.id <= self.last):
            return False
        self._recent[frame.id] = None
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        if self.last is None or frame.id > self.last:
            self.last = frame.id
        return True
