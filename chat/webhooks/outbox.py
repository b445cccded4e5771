"""The webhooks' outbox: deliveries written in the message batch's own transaction.

`MessageQueries._save_batch` calls `WebhookOutbox.enqueue` after the batch's
notifications are known, on the batch's connection: a delivery row exists exactly
when its message does, so a process that dies after the commit loses nothing
(at least once). With no webhook registered, `active` is False and the batch does
nothing more; with some, each message costs two dictionary lookups unless a
webhook matches. The index of webhooks (by room, by bot) is this process's copy,
reloaded after each local change and every `webhook_refresh_interval` seconds.

What matches (one delivery per webhook and message, the first event that applies):
- `dm`: a DM to the bot, `mention`: an `@name` of the bot in a room it can read;
  both are the bot's notifications of the message, worked out by `BatchNotifier`
  (so the bot's notification level for a room applies too);
- `message`: every message of the webhook's rooms.
Never a message the bot sent itself (a bot answering its own webhook would loop).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from chat.protocol import UserRef, encode, iso
from chat.storage.models import WebhookAttempt
from chat.storage.models import WebhookOutbox as OutboxRow
from chat.storage.records import NewMessage, Stored

EVENTS = ("mention", "dm", "message")


@dataclass(frozen=True, slots=True)
class Hook:
    """An active webhook as the write path needs it."""

    id: int
    bot: UserRef
    events: frozenset[str]
    room_ids: frozenset[int]


@dataclass(slots=True)
class WebhookOutbox:
    """The index of active webhooks and the outbox rows of each batch."""

    outbox_max: int  # deliveries one webhook may have waiting
    _by_room: dict[int, tuple[Hook, ...]] = field(default_factory=dict)
    _by_bot: dict[int, tuple[Hook, ...]] = field(default_factory=dict)
    # Webhook id -> events dropped because its outbox was full, not yet alerted.
    dropped: dict[int, int] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self._by_room or self._by_bot)

    def load(self, hooks: Iterable[Hook]) -> None:
        """Replace the index with `hooks` (the active webhooks)."""
        by_room: dict[int, list[Hook]] = {}
        by_bot: dict[int, list[Hook]] = {}
        for hook in hooks:
            if "message" in hook.events:
                for room_id in hook.room_ids:
                    by_room.setdefault(room_id, []).append(hook)
            if hook.events & {"mention", "dm"}:
                by_bot.setdefault(hook.bot.id, []).append(hook)
        self._by_room = {k: tuple(v) for k, v in by_room.items()}
        self._by_bot = {k: tuple(v) for k, v in by_bot.items()}

    def matches(self, item: NewMessage, stored: Stored) -> list[tuple[Hook, str]]:
        """The webhooks `stored` goes to, each with its event."""
        found: dict[int, tuple[Hook, str]] = {}
        for notice in stored.notifications:
            for hook in self._by_bot.get(notice.user_id, ()):
                if notice.frame.kind in hook.events:
                    found[hook.id] = (hook, notice.frame.kind)
        for hook in self._by_room.get(item.room.id, ()):
            found.setdefault(hook.id, (hook, "message"))
        return [(hook, event) for hook, event in found.values() if hook.bot.id != item.user.id]

    async def enqueue(
        self, conn: AsyncConnection, batch: Sequence[tuple[NewMessage, Stored]], now: float
    ) -> None:
        """Write the outbox rows of a stored batch, on its connection (its transaction)."""
        wanted = [(item, stored, m) for item, stored in batch for m in self.matches(item, stored)]
        if not wanted:
            return
        hook_ids = sorted({hook.id for _, _, (hook, _) in wanted})
        counted = await conn.execute(
            select(OutboxRow.webhook_id, func.count())
            .where(OutboxRow.webhook_id.in_(hook_ids))
            .group_by(OutboxRow.webhook_id)
        )
        waiting = dict(counted.tuples().all())
        rows: list[dict[str, object]] = []
        refused: list[dict[str, object]] = []
        frames: dict[int, str] = {}  # a message's frame, encoded once for every webhook
        for item, stored, (hook, event) in wanted:
            delivery = uuid.uuid4().hex
            row: dict[str, object] = {
                "webhook_id": hook.id,
                "room_id": item.room.id,
                "seq": stored.frame.seq,
                "delivery_id": delivery,
                "event": event,
                "created_at": now,
            }
            if waiting.get(hook.id, 0) >= self.outbox_max:
                self.dropped[hook.id] = self.dropped.get(hook.id, 0) + 1
                error = f"not queued: {self.outbox_max} deliveries already waiting"
                refused.append(row | {"attempt": 0, "status": "dropped", "error": error})
                continue
            waiting[hook.id] = waiting.get(hook.id, 0) + 1
            frame = frames.get(stored.frame.id)
            if frame is None:
                frame = frames[stored.frame.id] = encode(stored.frame)
            payload = body(delivery, event, hook, frame, now)
            rows.append(row | {"body": payload, "next_at": now, "attempts": 0})
        if rows:
            await conn.execute(insert(OutboxRow), rows)
        if refused:
            await conn.execute(insert(WebhookAttempt), refused)


def body(delivery: str, event: str, hook: Hook, frame: str, now: float) -> str:
    """A delivery's JSON body: the message frame as sent on the WebSocket, wrapped."""
    head = json.dumps(
        {
            "id": delivery,
            "event": event,
            "webhook": hook.id,
            "bot": {"id": hook.bot.id, "name": hook.bot.name},
            "ts": iso(now),
        },
        separators=(",", ":"),
    )
    return head[:-1] + ',"message":' + frame + "}"
