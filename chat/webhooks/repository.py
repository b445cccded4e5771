"""The webhooks' tables: registrations, the outbox's claims and outcomes, attempts.

Claiming is what keeps order and keeps processes apart. Only the head of each
(webhook, room) queue, its lowest seq, may be claimed, and only when it is due and
not leased: a room's next delivery waits until the one before is delivered (its
row deleted). A claim is an `UPDATE ... WHERE lease is free` in a write
transaction: SQLite's write lock serializes processes, and PostgreSQL re-checks
the condition on a row another transaction just claimed, so a row is claimed by
one process at a time. A lease outlives a delivery's timeout; a process that dies
mid-delivery leaves a lease that expires, and the row is sent again (at least once).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import aliased

from chat.protocol import UserRef, iso
from chat.storage.db import Database
from chat.storage.models import (
    Room,
    RoomMember,
    User,
    Webhook,
    WebhookAttempt,
    WebhookOutbox,
)
from chat.webhooks.outbox import Hook

MAX_ERROR = 500


@dataclass(frozen=True, slots=True)
class WebhookView:
    """A webhook as the API shows it (never its secret)."""

    id: int
    bot: UserRef
    url: str
    events: list[str]
    rooms: list[str]
    state: str
    failures: int
    pending: int
    created_at: float
    disabled_at: float | None
    disabled_reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "bot": {"id": self.bot.id, "name": self.bot.name},
            "url": self.url,
            "events": self.events,
            "rooms": self.rooms,
            "state": self.state,
            "failures": self.failures,
            "pending": self.pending,
            "created_at": iso(self.created_at),
            "disabled_at": iso(self.disabled_at) if self.disabled_at else None,
            "disabled_reason": self.disabled_reason,
        }


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this process holds the lease of, with what sending it needs."""

    id: int
    webhook_id: int
    bot_id: int
    room_id: int
    seq: int
    delivery_id: str
    event: str
    body: str
    attempts: int  # this attempt's number, from 1
    url: str
    secret: str


class WebhookRepository:
    """Every query of the webhooks."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- registrations ---

    async def create(
        self,
        bot_id: int,
        url: str,
        events: Sequence[str],
        room_ids: Sequence[int],
        secret: str,
        created_by: int,
    ) -> int:
        async with self.db.write() as s:
            row = Webhook(
                bot_id=bot_id,
                url=url,
                events=",".join(events),
                room_ids=json.dumps(sorted(room_ids)),
                secret=secret,
                created_by=created_by,
                created_at=time.time(),
                state="active",
                failures=0,
            )
            s.add(row)
            await s.flush()
            return row.id

    async def count_for_bot(self, bot_id: int) -> int:
        async with self.db.read() as s:
            count = await s.scalar(select(func.count(Webhook.id)).where(Webhook.bot_id == bot_id))
        return int(count or 0)

    async def views(self, webhook_id: int | None = None) -> list[WebhookView]:
        """Every webhook (or the one with `webhook_id`), oldest first."""
        bot = aliased(User)
        pending = (
            select(func.count(WebhookOutbox.id))
            .where(WebhookOutbox.webhook_id == Webhook.id)
            .scalar_subquery()
        )
        query = select(Webhook, bot, pending).join(bot, bot.id == Webhook.bot_id)
        if webhook_id is not None:
            query = query.where(Webhook.id == webhook_id)
        async with self.db.read() as s:
            rows = (await s.execute(query.order_by(Webhook.id))).tuples().all()
            wanted = {r for hook, _, _ in rows for r in json.loads(hook.room_ids)}
            names: dict[int, str] = {}
            if wanted:
                found = await s.execute(select(Room.id, Room.name).where(Room.id.in_(wanted)))
                names = dict(found.tuples().all())
        return [
            WebhookView(
                id=hook.id,
                bot=UserRef(id=user.id, name=user.username, role="bot"),
                url=hook.url,
                events=hook.events.split(","),
                rooms=[names[r] for r in json.loads(hook.room_ids) if r in names],
                state=hook.state,
                failures=hook.failures,
                pending=int(count or 0),
                created_at=hook.created_at,
                disabled_at=hook.disabled_at,
                disabled_reason=hook.disabled_reason,
            )
            for hook, user, count in rows
        ]

    async def delete(self, webhook_id: int) -> bool:
        """Remove a webhook with its outbox and attempts; False if there was none."""
        async with self.db.write() as s:
            await s.execute(delete(WebhookOutbox).where(WebhookOutbox.webhook_id == webhook_id))
            await s.execute(delete(WebhookAttempt).where(WebhookAttempt.webhook_id == webhook_id))
            done = await s.execute(delete(Webhook).where(Webhook.id == webhook_id))
        return bool(getattr(done, "rowcount", 0))

    async def enable(self, webhook_id: int) -> bool:
        """Make a disabled webhook active again (its waiting deliveries resume)."""
        async with self.db.write() as s:
            done = await s.execute(
                update(Webhook)
                .where(Webhook.id == webhook_id)
                .values(state="active", failures=0, disabled_at=None, disabled_reason=None)
            )
        return bool(getattr(done, "rowcount", 0))

    async def attempts(
        self, webhook_id: int, limit: int, before: int | None
    ) -> list[dict[str, Any]]:
        """The newest attempts of a webhook first; `before` (an attempt id) pages back."""
        query = (
            select(WebhookAttempt, Room.name)
            .join(Room, Room.id == WebhookAttempt.room_id, isouter=True)
            .where(WebhookAttempt.webhook_id == webhook_id)
            .order_by(WebhookAttempt.id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(WebhookAttempt.id < before)
        async with self.db.read() as s:
            rows = (await s.execute(query)).tuples().all()
        return [
            {
                "id": a.id,
                "delivery": a.delivery_id,
                "event": a.event,
                "room": room,
                "seq": a.seq,
                "attempt": a.attempt,
                "status": a.status,
                "http_status": a.http_status,
                "error": a.error,
                "duration_ms": a.duration_ms,
                "ts": iso(a.created_at),
            }
            for a, room in rows
        ]

    async def active_hooks(self) -> list[Hook]:
        query = (
            select(Webhook.id, Webhook.events, Webhook.room_ids, User.id, User.username)
            .join(User, User.id == Webhook.bot_id)
            .where(Webhook.state == "active")
        )
        async with self.db.read() as s:
            rows = (await s.execute(query)).tuples().all()
        return [
            Hook(
                hook_id,
                UserRef(id=bot_id, name=bot_name, role="bot"),
                frozenset(events.split(",")),
                frozenset(json.loads(room_ids)),
            )
            for hook_id, events, room_ids, bot_id, bot_name in rows
        ]

    async def bot_can_read(self, bot_id: int, room_id: int) -> bool:
        """Whether the bot may still read the room: not banned or disabled, and public or
        a member."""
        member = (
            select(RoomMember.user_id)
            .where(RoomMember.room_id == room_id, RoomMember.user_id == bot_id)
            .exists()
        )
        query = select(Room.id).where(Room.id == room_id, or_(Room.private.is_(False), member))
        async with self.db.read() as s:
            banned = await s.scalar(
                select(or_(User.banned, User.disabled)).where(User.id == bot_id)
            )
            readable = await s.scalar(query)
        return banned is False and readable is not None

    # --- the outbox ---

    async def claim(self, owner: str, lease: float, limit: int) -> list[Claimed]:
        """Lease up to `limit` due heads of (webhook, room) queues of active webhooks."""
        now = time.time()
        heads = (
            select(
                WebhookOutbox.webhook_id.label("webhook_id"),
                WebhookOutbox.room_id.label("room_id"),
                func.min(WebhookOutbox.seq).label("seq"),
            )
            .group_by(WebhookOutbox.webhook_id, WebhookOutbox.room_id)
            .subquery()
        )
        free = or_(WebhookOutbox.lease_until.is_(None), WebhookOutbox.lease_until < now)
        due = (
            select(WebhookOutbox.id)
            .join(
                heads,
                (heads.c.webhook_id == WebhookOutbox.webhook_id)
                & (heads.c.room_id == WebhookOutbox.room_id)
                & (heads.c.seq == WebhookOutbox.seq),
            )
            .join(Webhook, Webhook.id == WebhookOutbox.webhook_id)
            .where(Webhook.state == "active", WebhookOutbox.next_at <= now, free)
            .order_by(WebhookOutbox.id)
            .limit(limit)
        )
        async with self.db.write_connection() as conn:
            ids = list((await conn.execute(due)).scalars().all())
            if not ids:
                return []
            claimed = await conn.execute(
                update(WebhookOutbox)
                .where(WebhookOutbox.id.in_(ids), free)
                .values(
                    lease_until=now + lease,
                    lease_owner=owner,
                    attempts=WebhookOutbox.attempts + 1,
                )
                .returning(
                    WebhookOutbox.id,
                    WebhookOutbox.webhook_id,
                    WebhookOutbox.room_id,
                    WebhookOutbox.seq,
                    WebhookOutbox.delivery_id,
                    WebhookOutbox.event,
                    WebhookOutbox.body,
                    WebhookOutbox.attempts,
                )
            )
            rows = claimed.tuples().all()
            hooks = await conn.execute(
                select(Webhook.id, Webhook.bot_id, Webhook.url, Webhook.secret).where(
                    Webhook.id.in_({r[1] for r in rows})
                )
            )
            by_id = {h[0]: h for h in hooks.tuples().all()}
        out = []
        for row_id, hook_id, room_id, seq, delivery_id, event, body, attempts in rows:
            _, bot_id, url, secret = by_id[hook_id]
            out.append(
                Claimed(
                    row_id, hook_id, bot_id, room_id, seq, delivery_id, event, body, attempts,
                    url, secret,
                )
            )  # fmt: skip
        return out

    async def delivered(self, c: Claimed, owner: str, http_status: int, duration_ms: float) -> None:
        """The receiver took it: the row leaves the outbox, the failure count restarts."""
        async with self.db.write() as s:
            await s.execute(
                delete(WebhookOutbox).where(
                    WebhookOutbox.id == c.id, WebhookOutbox.lease_owner == owner
                )
            )
            await s.execute(
                update(Webhook)
                .where(Webhook.id == c.webhook_id, Webhook.failures != 0)
                .values(failures=0)
            )
            s.add(_attempt(c, "delivered", http_status, None, duration_ms))

    async def failed(
        self,
        c: Claimed,
        owner: str,
        http_status: int | None,
        error: str,
        duration_ms: float,
        *,
        retry_in: float,
        max_failures: int,
    ) -> bool:
        """The attempt failed: try again in `retry_in` seconds. True when this failure
        was the `max_failures`-th in a row and disabled the webhook (alert once)."""
        now = time.time()
        async with self.db.write() as s:
            await s.execute(
                update(WebhookOutbox)
                .where(WebhookOutbox.id == c.id, WebhookOutbox.lease_owner == owner)
                .values(next_at=now + retry_in, lease_until=None, lease_owner=None)
            )
            s.add(_attempt(c, "failed", http_status, error, duration_ms))
            failures = await s.scalar(
                update(Webhook)
                .where(Webhook.id == c.webhook_id)
                .values(failures=Webhook.failures + 1)
                .returning(Webhook.failures)
            )
            if failures is None or failures < max_failures:
                return False
            reason = f"{failures} failed deliveries in a row; the last: {error}"[:MAX_ERROR]
            disabled = await s.execute(
                update(Webhook)
                .where(Webhook.id == c.webhook_id, Webhook.state == "active")
                .values(state="disabled", disabled_at=now, disabled_reason=reason)
            )
            return bool(getattr(disabled, "rowcount", 0))

    async def skipped(self, c: Claimed, owner: str, reason: str) -> None:
        """Not sent and never will be (the bot cannot read the room any more)."""
        async with self.db.write() as s:
            await s.execute(
                delete(WebhookOutbox).where(
                    WebhookOutbox.id == c.id, WebhookOutbox.lease_owner == owner
                )
            )
            s.add(_attempt(c, "skipped", None, reason, None))

    async def release(self, owner: str) -> None:
        """Free every lease `owner` holds (a graceful stop): its deliveries are due again
        at once, for the next process, instead of when the leases run out."""
        async with self.db.write() as s:
            await s.execute(
                update(WebhookOutbox)
                .where(WebhookOutbox.lease_owner == owner)
                .values(lease_until=None, lease_owner=None)
            )

    async def trim(self, kept: int) -> None:
        """Keep the newest `kept` attempts of each webhook; drop rows of removed ones."""
        async with self.db.write() as s:
            for table in (WebhookOutbox, WebhookAttempt):
                await s.execute(delete(table).where(table.webhook_id.not_in(select(Webhook.id))))
        over = (
            select(WebhookAttempt.webhook_id)
            .group_by(WebhookAttempt.webhook_id)
            .having(func.count(WebhookAttempt.id) > kept)
        )
        async with self.db.read() as s:
            ids = (await s.execute(over)).scalars().all()
        for hook_id in ids:
            oldest_kept = (
                select(WebhookAttempt.id)
                .where(WebhookAttempt.webhook_id == hook_id)
                .order_by(WebhookAttempt.id.desc())
                .offset(kept - 1)
                .limit(1)
                .scalar_subquery()
            )
            async with self.db.write() as s:
                await s.execute(
                    delete(WebhookAttempt).where(
                        WebhookAttempt.webhook_id == hook_id, WebhookAttempt.id < oldest_kept
                    )
                )


def _attempt(
    c: Claimed, status: str, http_status: int | None, error: str | None, ms: float | None
) -> WebhookAttempt:
    return WebhookAttempt(
        webhook_id=c.webhook_id,
        delivery_id=c.delivery_id,
        event=c.event,
        room_id=c.room_id,
        seq=c.seq,
        attempt=c.attempts,
        status=status,
        http_status=http_status,
        error=error[:MAX_ERROR] if error else None,
        duration_ms=ms,
        created_at=time.time(),
    )
