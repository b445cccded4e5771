"""Queries on uploads: add one (within the user's quota), find one for a reader,
release content no row uses any more, sweep uploads never attached."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from chat.storage.db import Database
from chat.storage.models import Room, StoredFile, User


class QuotaExceeded(Exception):
    """The upload would take the user past `upload_quota_bytes`."""


@dataclass(frozen=True, slots=True)
class FileView:
    """An upload and the name of its room (whose read permission governs it)."""

    id: str
    name: str
    size: int
    content_type: str
    sha256: str
    thumbnail: bool
    room: str


async def lock_content(s: AsyncSession, sha256: str, *, postgres: bool) -> None:
    """Serialize adding and releasing rows of one content hash (PostgreSQL: an advisory
    lock for the transaction; SQLite: its write lock is held already). Without it a
    release could remove the bytes an upload of the same content just referenced."""
    if postgres:
        await s.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": sha256}
        )


class FileQueries:
    db: Database

    async def add_file(self, row: StoredFile, quota: int) -> None:
        """Store the upload's row, unless the user's stored files and it pass `quota`
        (`QuotaExceeded`). Its bytes are put in the blob store after this commits."""
        async with self.db.write() as s:
            if not self.db.is_sqlite:  # one upload of a user at a time
                await s.execute(select(User.id).where(User.id == row.user_id).with_for_update())
            used = await s.scalar(
                select(func.coalesce(func.sum(StoredFile.size), 0)).where(
                    StoredFile.user_id == row.user_id
                )
            )
            if int(used or 0) + row.size > quota:
                raise QuotaExceeded(f"you store {used} bytes of files; the quota is {quota}")
            await lock_content(s, row.sha256, postgres=not self.db.is_sqlite)
            s.add(row)

    async def file_by_id(self, file_id: str) -> FileView | None:
        """The upload, whoever asks: the caller checks the room (`Store.room_for`)."""
        async with self.db.read() as s:
            found = (
                await s.execute(
                    select(StoredFile, Room.name)
                    .join(Room, Room.id == StoredFile.room_id)
                    .where(StoredFile.id == file_id)
                )
            ).first()
        if found is None:
            return None
        row, room_name = found
        return FileView(
            row.id, row.name, row.size, row.content_type, row.sha256, row.thumbnail, room_name
        )

    async def forget_file(self, file_id: str) -> None:
        """Remove an upload's row (its bytes could not be stored)."""
        async with self.db.write() as s:
            await s.execute(delete(StoredFile).where(StoredFile.id == file_id))

    async def release_content(
        self, hashes: Collection[str], remove: Callable[[str], Awaitable[None]]
    ) -> int:
        """Call `remove(hash)` for each hash no `files` row references any more, under
        the hash's lock (an upload of the same bytes waits); how many were removed."""
        removed = 0
        for sha256 in sorted(set(hashes)):
            async with self.db.write() as s:
                await lock_content(s, sha256, postgres=not self.db.is_sqlite)
                used = await s.scalar(
                    select(func.count()).select_from(StoredFile).where(StoredFile.sha256 == sha256)
                )
                if not used:
                    await remove(sha256)
                    removed += 1
        return removed

    async def sweep_unattached(self, cutoff: float) -> list[str]:
        """Delete uploads created before `cutoff` and never attached; their hashes."""
        async with self.db.write() as s:
            gone = await s.scalars(
                delete(StoredFile)
                .where(StoredFile.message_id.is_(None), StoredFile.created_at < cutoff)
                .returning(StoredFile.sha256)
            )
            return list(gone.all())
