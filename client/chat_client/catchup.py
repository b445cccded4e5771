"""Catching up over HTTP on what the WebSocket did not bring.

Three gaps are filled from pages, oldest first: the messages a room's replay left out
(a `join ... since` past the server's cap, or a gap seen live), the changes a resume
could not resend (`changes_truncated`), and the notifications that came while no
connection was open. A page that cannot be fetched raises `ResyncNeeded`: the client
then reconnects and resumes rather than skip anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from chat_client.changes import ChangeFrame, state_frames
from chat_client.errors import ChatClientError
from chat_client.history import PAGE, History, HistoryError
from chat_client.inbox import PAGE as NOTIFICATIONS_PAGE
from chat_client.inbox import Inbox, NotificationCursor
from chat_client.protocol import MessageFrame, NotificationFrame

__all__ = ["CatchUp", "ResyncNeeded"]


class ResyncNeeded(Exception):
    """A gap could not be paged over HTTP: reconnect and resume."""


class CatchUp:
    """Pages `history` and `inbox` with the token `token()` returns."""

    def __init__(self, history: History, inbox: Inbox, token: Callable[[], Awaitable[str]]) -> None:
        self._history = history
        self._inbox = inbox
        self._token = token

    async def messages(
        self, room: str, after: int, before: int, deliver: Callable[[MessageFrame], None]
    ) -> None:
        """Deliver the stored messages of `room` with `after < seq < before`, in order
        (each as soon as read: what was delivered stays so if a later page fails)."""
        while after + 1 < before:
            items = await self._page(room, after)
            for item in items:
                if after < item.seq < before:
                    deliver(item)
                    after = item.seq
            if len(items) < PAGE or items[-1].seq >= before - 1:
                return
            after = max(after, items[-1].seq)

    async def changes(self, room: str, upto: int, deliver: Callable[[ChangeFrame], None]) -> None:
        """Deliver the state now of each changed message of `room` up to seq `upto`, as
        change events (see `state_frames`)."""
        after = 0
        while after < upto:
            items = await self._page(room, after)
            for item in items:
                if after < item.seq <= upto:
                    for change in state_frames(item):
                        deliver(change)
            if len(items) < PAGE or items[-1].seq <= after:
                return
            after = items[-1].seq

    async def notifications(
        self, cursor: NotificationCursor, deliver: Callable[[NotificationFrame], None]
    ) -> None:
        """Deliver the notifications after `cursor.last` that it has not taken, in id
        order, paging until a short page (so ones stored after `hello` are found too)."""
        while True:
            after = cursor.last or 0
            try:
                page = await self._inbox.page(after, NOTIFICATIONS_PAGE)
            except ChatClientError as exc:
                raise ResyncNeeded(f"cannot page notifications after {after}: {exc}") from exc
            for item in page.items:
                if cursor.take(item, paged=True):
                    deliver(item)
            if len(page.items) < NOTIFICATIONS_PAGE:
                return

    async def _page(self, room: str, after: int) -> list[MessageFrame]:
        try:
            return await self._history.after(room, after, await self._token())
        except HistoryError as exc:
            raise ResyncNeeded(f"cannot page {room!r} after {after}: {exc}") from exc
