"""Fill a running server's database directly, for tests and benchmarks of bulk work.

Sending tens of thousands of messages through the socket would take most of a
test's time and fight the rate limits; these helpers insert rows the way
`Store.save_message` leaves them (consecutive seqs, `rooms.last_seq` bumped).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import create_async_engine

from chat.storage.models import Message, Room, User

BATCH = 5000


async def seed_messages(
    database_url: str,
    room: str,
    username: str,
    bodies: Sequence[str],
    *,
    created_at: float | None = None,
) -> list[int]:
    """Append `bodies` to `room` as `username`; returns their seqs."""
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            room_id, last_seq = (
                await conn.execute(select(Room.id, Room.last_seq).where(Room.name == room))
            ).one()
            user_id = (
                await conn.execute(select(User.id).where(User.username == username))
            ).scalar_one()
            ts = time.time() if created_at is None else created_at
            seqs = list(range(last_seq + 1, last_seq + 1 + len(bodies)))
            rows = [
                {
                    "room_id": room_id,
                    "seq": seq,
                    "user_id": user_id,
                    "ref": None,
                    "body": body,
                    "created_at": ts,
                }
                for seq, body in zip(seqs, bodies, strict=True)
            ]
            for start in range(0, len(rows), BATCH):
                await conn.execute(insert(Message), rows[start : start + BATCH])
            await conn.execute(
                update(Room).where(Room.id == room_id).values(last_seq=last_seq + len(bodies))
            )
        return seqs
    finally:
        await engine.dispose()


async def age_messages(database_url: str, room: str, seqs: Sequence[int], age: float) -> None:
    """Make the given messages of `room` look `age` seconds old."""
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            room_id = (await conn.execute(select(Room.id).where(Room.name == room))).scalar_one()
            await conn.execute(
                update(Message)
                .where(Message.room_id == room_id, Message.seq.in_(list(seqs)))
                .values(created_at=time.time() - age)
            )
    finally:
        await engine.dispose()
