"""Queries on a user's notification inbox: pages, counters, read marks, app
notifications, mention counts per room and each room's notification level."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.orm import aliased

from chat.protocol import NotificationFrame, iso
from chat.storage.db import Database
from chat.storage.models import Notification, Room, RoomState, User
from chat.storage.notifications import default_level
from chat.storage.records import Notice, user_ref

Sender = aliased(User)


class InboxQueries:
    db: Database

    async def notifications_after(
        self, user_id: int, after: int, limit: int
    ) -> tuple[list[NotificationFrame], int]:
        """The user's notifications with id > `after`, oldest first, and how many are unread."""
        query = (
            select(Notification, Room.name, Sender)
            .outerjoin(Room, Room.id == Notification.room_id)
            .outerjoin(Sender, Sender.id == Notification.from_user_id)
            .where(Notification.user_id == user_id, Notification.id > after)
            .order_by(Notification.id)
            .limit(limit)
        )
        async with self.db.read() as s:
            rows: Sequence[tuple[Notification, str | None, User | None]] = (
                (await s.execute(query)).tuples().all()
            )
            unread = await s.scalar(_unread_count(user_id))
        return [_frame(n, room, sender) for n, room, sender in rows], int(unread or 0)

    async def notification_counters(self, user_id: int) -> tuple[int, int]:
        """`(unread, last id)` of the user's notifications: one query, for `hello`."""
        newest = (
            select(func.max(Notification.id))
            .where(Notification.user_id == user_id)
            .scalar_subquery()
        )
        async with self.db.read() as s:
            row = (await s.execute(select(_unread_count(user_id).scalar_subquery(), newest))).one()
        unread, last = row
        return int(unread or 0), int(last or 0)

    async def mark_notifications_read(self, user_id: int, upto: int) -> tuple[int, int]:
        """Move the user's read mark to `upto` (never back, never past their newest
        notification); `(the mark now, unread left)`."""
        async with self.db.write() as s:
            newest = await s.scalar(
                select(func.max(Notification.id)).where(Notification.user_id == user_id)
            )
            target = min(upto, int(newest or 0))
            await s.execute(
                update(User)
                .where(User.id == user_id, User.notifications_read_upto < target)
                .values(notifications_read_upto=target)
            )
            mark = await s.scalar(select(User.notifications_read_upto).where(User.id == user_id))
            unread = await s.scalar(_unread_count(user_id))
        return int(mark or 0), int(unread or 0)

    async def add_app_notification(
        self, user_id: int, sender: User, title: str, body: str, link: str | None
    ) -> Notice:
        """Store a notification of kind `app` from `sender` to the user."""
        async with self.db.write() as s:
            note = Notification(
                user_id=user_id,
                kind="app",
                title=title,
                body=body,
                link=link,
                from_user_id=sender.id,
                created_at=time.time(),
            )
            s.add(note)
            await s.flush()
        return Notice(user_id, _frame(note, None, sender))

    async def mention_counts(self, user_id: int) -> dict[int, int]:
        """Unread notifications of kind `mention`, per room id (rooms without any left out)."""
        query = (
            select(Notification.room_id, func.count())
            .join(User, User.id == Notification.user_id)
            .where(
                Notification.user_id == user_id,
                Notification.kind == "mention",
                Notification.id > User.notifications_read_upto,
                Notification.room_id.is_not(None),
            )
            .group_by(Notification.room_id)
        )
        async with self.db.read() as s:
            rows = (await s.execute(query)).tuples().all()
        return {int(room_id): int(count) for room_id, count in rows if room_id is not None}

    async def notify_level(self, room_id: int, user_id: int) -> tuple[str, bool]:
        """The user's notification level in the room, and whether it is the default."""
        query = (
            select(Room.kind, RoomState.notify)
            .outerjoin(RoomState, and_(RoomState.room_id == Room.id, RoomState.user_id == user_id))
            .where(Room.id == room_id)
        )
        async with self.db.read() as s:
            kind, chosen = (await s.execute(query)).one()
        return (chosen, False) if chosen else (default_level(kind), True)

    async def set_notify_level(self, room_id: int, user_id: int, level: str | None) -> None:
        """Choose the user's level in the room (None: back to the default)."""
        # An upsert: a concurrent request (or the read cursor's row) may create the row.
        upsert = text(
            "INSERT INTO room_states (room_id, user_id, read_seq, notify)"
            " VALUES (:room_id, :user_id, 0, :level)"
            " ON CONFLICT (room_id, user_id) DO UPDATE SET notify = excluded.notify"
        )
        async with self.db.write() as s:
            await s.execute(upsert, {"room_id": room_id, "user_id": user_id, "level": level})


def _unread_count(user_id: int) -> Any:
    return (
        select(func.count())
        .select_from(Notification)
        .join(User, User.id == Notification.user_id)
        .where(Notification.user_id == user_id, Notification.id > User.notifications_read_upto)
    )


def _frame(note: Notification, room: str | None, sender: User | None) -> NotificationFrame:
    return NotificationFrame(
        id=note.id,
        kind=note.kind,
        room=room,
        seq=note.seq,
        title=note.title,
        body=note.body,
        link=note.link,
        ts=iso(note.created_at),
        from_=user_ref(sender) if sender is not None else None,
    )
