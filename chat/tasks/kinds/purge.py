"""`purge` (admins): deletes old messages in small batches, senders first."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import Field
from sqlalchemy import and_, delete, func, select

from chat.protocol import UserRef, iso
from chat.storage.models import Message, Room, StoredFile
from chat.tasks.context import TaskContext, TaskDeps
from chat.tasks.registry import TaskParams, task_kind
from chat.tasks.status import TaskFailed, TaskRefused

PURGE_BATCH = 500
PURGE_PAUSE = 0.005  # least rest between purge batches (seconds)
PURGE_REST = 1.0  # rest after each batch, relative to the time it took


class PurgeParams(TaskParams):
    older_than_days: float = Field(
        ge=0, le=36_500, title="Older than (days)", description="delete messages older than this"
    )
    room: str | None = Field(
        None, max_length=200, title="Room", description="only this room (default: every room)"
    )


async def _purge_room_exists(deps: TaskDeps, user: UserRef, params: PurgeParams) -> None:
    if params.room is not None and await deps.rooms.room_for(params.room, user) is None:
        raise TaskRefused(404, "no such room")


@task_kind("purge", PurgeParams, admin_only=True, check=_purge_room_exists)
async def purge(ctx: TaskContext, params: PurgeParams) -> dict[str, Any]:
    """Delete messages older than N days (optionally in one room), in small batches.

    Each batch of at most 500 messages is its own short write transaction,
    followed by a short pause, so senders in busy rooms wait milliseconds at most.
    A cancelled or failed purge leaves the batches done so far deleted; running
    it again finishes the job. A message's reactions and change history (deleted
    text included) go with it (`ON DELETE CASCADE`); replies to it then show an
    empty excerpt. Their attached files go too (rows, then bytes nothing else uses).
    """
    db = ctx.deps.db
    cutoff = time.time() - params.older_than_days * 86400
    conditions = [Message.created_at < cutoff]
    if params.room is not None:
        async with db.read() as s:
            room_id = await s.scalar(select(Room.id).where(Room.name == params.room))
        if room_id is None:
            raise TaskFailed("the room no longer exists")
        conditions.append(Message.room_id == room_id)
    where = and_(*conditions)
    async with db.read() as s:
        total = int(await s.scalar(select(func.count(Message.id)).where(where)) or 0)
    deleted = 0
    await ctx.progress(0, total, f"0 of {total} messages deleted")
    while True:
        began = time.perf_counter()
        async with db.write() as s:
            ids = (
                await s.scalars(
                    select(Message.id).where(where).order_by(Message.id).limit(PURGE_BATCH)
                )
            ).all()
            released: list[str] = []
            if ids:
                gone = await s.scalars(
                    delete(StoredFile)
                    .where(StoredFile.message_id.in_(ids))
                    .returning(StoredFile.sha256)
                )
                released = list(gone.all())
                await s.execute(delete(Message).where(Message.id.in_(ids)))
        if not ids:
            break
        await ctx.deps.files.release(released)  # their bytes, unless another file has them
        deleted += len(ids)
        await ctx.progress(deleted, max(total, deleted), f"{deleted} of {total} messages deleted")
        # Rest at least as long as the batch held the write lock: senders go first.
        await asyncio.sleep(max(PURGE_PAUSE, (time.perf_counter() - began) * PURGE_REST))
    return {"deleted": deleted, "cutoff": iso(cutoff), "room": params.room}
