"""Queries on messages: the group-commit batch insert, history pages, gap reads."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from chat.protocol import AckFrame, Attachment, MessageFrame, ReplyRef, UserRef, iso
from chat.storage import attachments
from chat.storage.attachments import AttachmentRefused
from chat.storage.changes import missing_reply, reactions_of, reply_refs
from chat.storage.db import Database
from chat.storage.models import Message, Room, User
from chat.storage.records import NewMessage, ReadOnlyRoom, RoomView, Stored, user_ref

if TYPE_CHECKING:
    from chat.storage.notifications import BatchNotifier
    from chat.webhooks.outbox import WebhookOutbox

BATCH_RETRIES = 3  # a batch that hit a ref stored by another process meanwhile
# What the writer answers for a send that was not stored (nothing of it was).
Refused = ReadOnlyRoom | AttachmentRefused


def value_rows(paramstyle: str, n: int, types: tuple[str | None, ...]) -> str:
    """Placeholders `(?, ?), (?, ?)...` for `n` rows of driver-level SQL, in the
    driver's style (`$1::bigint, $2...` for asyncpg, casting where a type is given)."""
    if paramstyle != "numeric_dollar":
        row = "(" + ", ".join("?" * len(types)) + ")"
        return ", ".join([row] * n)
    out = []
    for r in range(n):
        marks = (
            f"${r * len(types) + i + 1}" + (f"::{kind}" if kind else "")
            for i, kind in enumerate(types)
        )
        out.append("(" + ", ".join(marks) + ")")
    return ", ".join(out)


class MessageQueries:
    db: Database
    notifier: BatchNotifier  # mentions and DMs, in the batch's transaction
    outbox: WebhookOutbox  # webhook deliveries, in the batch's transaction

    async def messages_between(
        self, room: str, after: int, upto: int, limit: int
    ) -> list[MessageFrame]:
        """Messages of the room called `room` with `after` < seq <= `upto`, oldest first."""
        query = (
            select(Message, User)
            .join(Room, Room.id == Message.room_id)
            .join(User, User.id == Message.user_id)
            .where(Room.name == room, Message.seq > after, Message.seq <= upto)
            .order_by(Message.seq.asc())
            .limit(limit)
        )
        async with self.db.read() as s:
            rows: Sequence[tuple[Message, User]] = (await s.execute(query)).tuples().all()
            return await self._frames(s, room, rows)

    async def save_messages(self, batch: Sequence[NewMessage]) -> list[Stored | Refused]:
        """Store a batch in one transaction; a result per item, in the batch's order.

        A message for a room archived meanwhile is not stored: its result is a
        `ReadOnlyRoom` (the rest of the batch is stored, without a seq gap); one
        whose attachments are not the sender's free uploads to the room is an
        `AttachmentRefused`, checked and bound in this transaction.

        A `(user, ref)` stored before (by any process) or earlier in the batch
        answers with the first message (`duplicate`). Each room's seqs for the
        batch come from one `last_seq = last_seq + k ... RETURNING` update in
        the same transaction as the insert: the row lock (or SQLite's write
        lock) keeps several processes gapless, and a rollback gives every seq
        back. A unique violation (the same ref stored by another process
        between our check and our insert) retries the batch, then its messages
        one by one.
        """
        for _ in range(BATCH_RETRIES):
            try:
                return await self._save_batch(batch)
            except IntegrityError:
                continue  # a ref another process stored meanwhile: look again
        # Still racing another process on the same refs: one at a time, so a send
        # that races nobody is never refused for one that does.
        results: list[Stored | Refused] = []
        for item in batch:
            for attempt in range(BATCH_RETRIES):
                try:
                    results += await self._save_batch([item])
                    break
                except IntegrityError:
                    if attempt == BATCH_RETRIES - 1:
                        raise
        return results

    async def _save_batch(self, batch: Sequence[NewMessage]) -> list[Stored | Refused]:
        now = time.time()
        async with self.db.write_connection() as conn:
            earlier = await self._stored_refs(conn, batch)
            fresh: dict[tuple[int, str], NewMessage] = {}
            for item in batch:
                key = (item.user.id, item.ref)
                if key not in earlier and key not in fresh:
                    fresh[key] = item
            first: dict[tuple[int, str], Stored | Refused] = {}
            files: dict[tuple[int, str], list[Attachment]] = {}
            if any(item.attachments for item in fresh.values()):  # else no cost at all
                await self._claim_files(conn, fresh, first, files)
            if fresh:
                rows = await self._insert_batch(conn, list(fresh.values()), now)
                ts = iso(now)  # the whole batch's time, formatted once
                for (key, item), row in zip(fresh.items(), rows, strict=True):
                    if row is None:  # the room is archived: refused, no seq taken
                        first[key] = ReadOnlyRoom(item.room.name)
                        continue
                    first[key] = self._stored(
                        item.room.name,
                        item.user,
                        item.ref,
                        item.body,
                        row,
                        duplicate=False,
                        ts=ts,
                        reply=item.reply,
                        attachments=files.get(key),
                    )
                if files:
                    await attachments.bind(
                        conn,
                        [
                            (row[0], [a.id for a in files[key]])
                            for key, row in zip(fresh, rows, strict=True)
                            if row is not None and key in files
                        ],
                    )
                # Notifications (mentions, DMs) in the same transaction as their messages.
                pairs = zip(fresh.items(), rows, strict=True)
                kept = [(key, item, row) for (key, item), row in pairs if row is not None]
                notes = await self.notifier.notify(
                    conn, [item for _, item, _ in kept], [row[1] for _, _, row in kept], now
                )
                for (key, _, _), notices in zip(kept, notes, strict=True):
                    stored = first[key]
                    if notices and isinstance(stored, Stored):
                        first[key] = replace(stored, notifications=notices)
                if self.outbox.active:  # else no cost at all
                    done = [(item, first[key]) for key, item, _ in kept]
                    await self.outbox.enqueue(
                        conn, [(i, s) for i, s in done if isinstance(s, Stored)], now
                    )
        results: list[Stored | Refused] = []
        for item in batch:
            key = (item.user.id, item.ref)
            if key in first:  # stored now: the first occurrence, then repeats of it
                stored = first[key]
                results.append(stored)
                if isinstance(stored, Stored):
                    first[key] = Stored(stored.ack, stored.frame, duplicate=True)
            else:
                results.append(earlier[key])
        return results

    @staticmethod
    async def _claim_files(
        conn: AsyncConnection,
        fresh: dict[tuple[int, str], NewMessage],
        first: dict[tuple[int, str], Stored | Refused],
        files: dict[tuple[int, str], list[Attachment]],
    ) -> None:
        """Check the attachments of the fresh sends that have some: a refused send
        leaves `fresh` (answered in `first`), an accepted one's files go in `files`."""
        keys = [key for key, item in fresh.items() if item.attachments]
        claims = await attachments.claim(conn, [fresh[key] for key in keys])
        for key, claimed in zip(keys, claims, strict=True):
            if isinstance(claimed, AttachmentRefused):
                first[key] = claimed
                del fresh[key]
            else:
                files[key] = claimed

    async def _insert_batch(
        self, conn: AsyncConnection, items: list[NewMessage], now: float
    ) -> list[tuple[int, int, float] | None]:
        """Take each room's seqs for `items` and insert them: `(id, seq, created_at)` each,
        None for an item whose room is archived (the update skips it: no seq taken).

        Two statements whatever the batch: one `UPDATE ... FROM (VALUES ...)
        RETURNING` for every writable room's `last_seq`, one multi-row `INSERT ...
        RETURNING`. Driver-level SQL: building a SQLAlchemy expression with a
        bound parameter per value cost more than the database work itself.
        """
        counts = Counter(item.room.id for item in items)
        style = conn.dialect.paramstyle
        bump = await conn.exec_driver_sql(
            # Only placeholders are spliced in: every value is a bound parameter.
            "UPDATE rooms SET last_seq = rooms.last_seq + v.column2 FROM (VALUES "  # noqa: S608
            + value_rows(style, len(counts), ("bigint", "bigint"))
            + ") AS v WHERE rooms.id = v.column1 AND NOT rooms.archived"
            " RETURNING rooms.id, rooms.last_seq",
            tuple(value for pair in counts.items() for value in pair),
        )
        last_seqs = cast(Sequence[tuple[int, int]], bump.all())
        next_seq = {room_id: last - counts[room_id] + 1 for room_id, last in last_seqs}
        values: list[object] = []
        seqs: list[int | None] = []
        for item in items:
            seq = next_seq.get(item.room.id)
            if seq is None:  # archived: refused, nothing taken
                seqs.append(None)
                continue
            next_seq[item.room.id] = seq + 1
            seqs.append(seq)
            reply_to = item.reply.seq if item.reply is not None else None
            values += (item.room.id, seq, item.user.id, item.ref, item.body, now, reply_to)
        if not values:
            return [None] * len(items)
        inserted = await conn.exec_driver_sql(
            "INSERT INTO messages (room_id, seq, user_id, ref, body, created_at, reply_to)"  # noqa: S608
            " VALUES "
            + value_rows(style, len(values) // 7, (None,) * 6 + ("bigint",))
            + " RETURNING id, room_id, seq",
            tuple(values),
        )
        new_rows = cast(Sequence[tuple[int, int, int]], inserted.all())
        ids = {(room_id, seq): message_id for message_id, room_id, seq in new_rows}
        return [
            (ids[(item.room.id, seq)], seq, now) if seq is not None else None
            for item, seq in zip(items, seqs, strict=True)
        ]

    async def _stored_refs(
        self, conn: AsyncConnection, batch: Sequence[NewMessage]
    ) -> dict[tuple[int, str], Stored]:
        """The first messages of the batch's `(user, ref)` pairs stored before now.

        One index lookup per pair, by joining the pairs as a `VALUES` list:
        `user_id IN (...) AND ref IN (...)` made SQLite probe every user with
        every ref (n² lookups, 80 ms for a batch of 500).
        """
        users = {item.user.id: item.user for item in batch}
        pairs = {(item.user.id, item.ref) for item in batch}
        rows = await conn.exec_driver_sql(
            # Only placeholders are spliced in: every value is a bound parameter.
            "SELECT m.id, m.seq, m.created_at, m.user_id, m.ref, m.body, r.name FROM (VALUES "  # noqa: S608
            + value_rows(conn.dialect.paramstyle, len(pairs), ("bigint", "text"))
            + ") AS v JOIN messages AS m ON m.user_id = v.column1 AND m.ref = v.column2"
            " JOIN rooms AS r ON r.id = m.room_id",
            tuple(value for pair in pairs for value in pair),
        )
        found: dict[tuple[int, str], Stored] = {}
        matches = cast(Sequence[tuple[int, int, float, int, str, str, str]], rows.all())
        for message_id, seq, created_at, user_id, ref, body, room in matches:
            row = (message_id, seq, created_at)
            user = users[user_id]
            found[(user_id, ref)] = self._stored(room, user, ref, body, row, duplicate=True)
        return found

    @staticmethod
    def _stored(
        room: str,
        user: UserRef,
        ref: str,
        body: str,
        row: tuple[int, int, float],
        *,
        duplicate: bool,
        ts: str | None = None,
        reply: ReplyRef | None = None,
        attachments: list[Attachment] | None = None,
    ) -> Stored:
        """The ack and frame of a stored message, `row` being `(id, seq, created_at)`
        (`ts`: `created_at` already formatted; `reply`: what it answers)."""
        message_id, seq, created_at = row
        ts = ts or iso(created_at)
        # Built without validation: every value comes from a checked frame or the database.
        # Every field is given: pydantic's `model_construct` inspects the signature of a
        # `default_factory` for each field left out, which was a quarter of the server's
        # time at saturation.
        ack = AckFrame.model_construct(
            type="ack", ref=ref, room=room, id=message_id, seq=seq, ts=ts
        )
        frame = MessageFrame.model_construct(
            type="message",
            room=room,
            id=message_id,
            seq=seq,
            user=user,
            body=body,
            ts=ts,
            reply_to=reply,
            attachments=attachments or [],
            reactions={},
            edited_at=None,
            deleted=False,
        )
        return Stored(ack, frame, duplicate)

    async def messages(
        self,
        room: RoomView,
        *,
        before: int | None = None,
        after: int | None = None,
        upto: int | None = None,
        limit: int,
    ) -> list[MessageFrame]:
        """A page of history: newest first with `before`, oldest first with `after`."""
        conditions = [Message.room_id == room.id]
        if after is not None:
            conditions.append(Message.seq > after)
            order = Message.seq.asc()
        else:
            order = Message.seq.desc()
        if before is not None:
            conditions.append(Message.seq < before)
        if upto is not None:
            conditions.append(Message.seq <= upto)
        query = (
            select(Message, User)
            .join(User, User.id == Message.user_id)
            .where(and_(*conditions))
            .order_by(order)
            .limit(limit)
        )
        async with self.db.read() as s:
            rows: Sequence[tuple[Message, User]] = (await s.execute(query)).tuples().all()
            return await self._frames(s, room.name, rows)

    @staticmethod
    async def _frames(
        s: AsyncSession, room_name: str, rows: Sequence[tuple[Message, User]]
    ) -> list[MessageFrame]:
        """Message frames with their current state: reactions and replied messages
        read in one query each for the whole page (not per message)."""
        if not rows:
            return []
        reactions = await reactions_of(s, [m.id for m, _ in rows])
        files = await attachments.attachments_of(s, [m.id for m, _ in rows])
        wanted = {m.reply_to for m, _ in rows if m.reply_to is not None}
        replies = await reply_refs(s, rows[0][0].room_id, wanted) if wanted else {}
        frames = []
        for msg, user in rows:
            reply = None
            if msg.reply_to is not None:
                reply = replies.get(msg.reply_to) or missing_reply(msg.reply_to)
            frames.append(
                MessageFrame(
                    room=room_name,
                    id=msg.id,
                    seq=msg.seq,
                    user=user_ref(user),
                    body=msg.body,
                    ts=iso(msg.created_at),
                    reply_to=reply,
                    attachments=files.get(msg.id, []),
                    reactions=reactions.get(msg.id, {}),
                    # Deleted: nothing left of the text, its edits included.
                    edited_at=iso(msg.edited_at) if msg.edited_at and not msg.deleted else None,
                    deleted=msg.deleted,
                )
            )
        return frames
