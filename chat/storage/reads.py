"""Read cursors (`room_states.read_seq`) and unread counts.

"Unread" in a room: its messages after the user's cursor, not their own and not
deleted, counted by the database in one query (for one room or many). Only the
room's newest `UNREAD_WINDOW` seqs are looked at, so the work is bounded however
long a history nobody read: a count of `UNREAD_WINDOW` means "that many or more".
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import and_, case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from chat.storage.db import Database
from chat.storage.models import Message, Room, RoomState

UNREAD_WINDOW = 1000
IDS_PER_QUERY = 10_000  # room ids bound in one `IN` list (asyncpg binds at most 32,767)


class ReadQueries:
    db: Database

    async def mark_read(self, room_id: int, user_id: int, seq: int) -> tuple[int, bool]:
        """Move the user's cursor to `seq` (clamped to the room's last seq), never back.

        Returns `(cursor, moved)`. One upsert keeping the larger value, so two
        concurrent moves (two connections, two processes) end at the larger one.
        """
        async with self.db.write() as s:
            last_seq = int(await s.scalar(select(Room.last_seq).where(Room.id == room_id)) or 0)
            target = min(seq, last_seq)
            before = await s.scalar(
                select(RoomState.read_seq).where(
                    RoomState.room_id == room_id, RoomState.user_id == user_id
                )
            )
            insert = sqlite_insert if self.db.is_sqlite else pg_insert
            values = insert(RoomState).values(room_id=room_id, user_id=user_id, read_seq=target)
            upsert = values.on_conflict_do_update(
                index_elements=[RoomState.room_id, RoomState.user_id],
                set_={
                    "read_seq": case(
                        (
                            RoomState.read_seq < values.excluded.read_seq,
                            values.excluded.read_seq,
                        ),
                        else_=RoomState.read_seq,
                    )
                },
            ).returning(RoomState.read_seq)
            cursor = int(await s.scalar(upsert) or 0)
        return cursor, cursor > int(before or 0)

    async def read_state(self, room_id: int, user_id: int) -> tuple[int, int]:
        """`(read_seq, unread)` of the user in the room, in one query."""
        cursor = (
            select(RoomState.read_seq)
            .where(RoomState.room_id == room_id, RoomState.user_id == user_id)
            .scalar_subquery()
        )
        read_seq = func.coalesce(cursor, 0)
        last_seq = select(Room.last_seq).where(Room.id == room_id).scalar_subquery()
        unread = (
            select(func.count(Message.id))
            .where(
                Message.room_id == room_id,
                Message.seq > read_seq,
                Message.seq > last_seq - UNREAD_WINDOW,
                Message.user_id != user_id,
                Message.deleted.is_(False),
            )
            .scalar_subquery()
        )
        async with self.db.read() as s:
            row = (await s.execute(select(read_seq, unread))).one()
        return int(row[0]), int(row[1])

    async def unread_counts(self, user_id: int, room_ids: Collection[int]) -> dict[int, int]:
        """Each room's unread count for the user (rooms with none are 0), in one query
        per `IDS_PER_QUERY` rooms."""
        if not room_ids:
            return {}
        ids = list(room_ids)
        state = and_(RoomState.room_id == Message.room_id, RoomState.user_id == user_id)
        counts: dict[int, int] = {}
        async with self.db.read() as s:
            for start in range(0, len(ids), IDS_PER_QUERY):
                query = (
                    select(Message.room_id, func.count(Message.id))
                    .join(Room, Room.id == Message.room_id)
                    .outerjoin(RoomState, state)
                    .where(
                        Message.room_id.in_(ids[start : start + IDS_PER_QUERY]),
                        Message.seq > func.coalesce(RoomState.read_seq, 0),
                        Message.seq > Room.last_seq - UNREAD_WINDOW,
                        Message.user_id != user_id,
                        Message.deleted.is_(False),
                    )
                    .group_by(Message.room_id)
                )
                counts.update((room_id, int(n)) for room_id, n in (await s.execute(query)).tuples())
        return {room_id: counts.get(room_id, 0) for room_id in room_ids}
