"""Files on messages: claimed and bound in the send batch's transaction, read for frames.

A send's attachments must be the sender's own uploads to the message's room, not
attached yet (nor claimed by an earlier send of the same batch). The check and
the binding happen in the transaction that inserts the message, so an `ack`
means the files are bound, and a refused send stores nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from chat.protocol import Attachment
from chat.storage.models import StoredFile
from chat.storage.records import NewMessage


class AttachmentRefused(Exception):
    """A send whose attachments are not the sender's own free uploads to its room:
    nothing was stored (the writer's answer)."""


def attachment(row: Any) -> Attachment:
    """The wire form of a `files` row (`StoredFile` or a row with its columns)."""
    return Attachment(
        id=row.id,
        name=row.name,
        size=row.size,
        content_type=row.content_type,
        width=row.width,
        height=row.height,
        thumbnail=f"/api/files/{row.id}/thumbnail" if row.thumbnail else None,
    )


_COLUMNS = (
    StoredFile.id,
    StoredFile.room_id,
    StoredFile.user_id,
    StoredFile.message_id,
    StoredFile.name,
    StoredFile.size,
    StoredFile.content_type,
    StoredFile.width,
    StoredFile.height,
    StoredFile.thumbnail,
    StoredFile.created_at,
)


async def claim(
    conn: AsyncConnection, items: Sequence[NewMessage]
) -> list[list[Attachment] | AttachmentRefused]:
    """Each item's attachments, or why the item is refused, in the items' order.

    One read for the whole batch, rows locked on PostgreSQL (`FOR UPDATE`; SQLite's
    write lock is already held) so no other send or sweep takes them meanwhile.
    """
    wanted = {file_id for item in items for file_id in item.attachments}
    query = select(*_COLUMNS).where(StoredFile.id.in_(wanted))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    rows = {row.id: row for row in (await conn.execute(query)).all()} if wanted else {}
    taken: set[str] = set()
    out: list[list[Attachment] | AttachmentRefused] = []
    for item in items:
        problem = None
        for file_id in item.attachments:
            row = rows.get(file_id)
            if row is None or row.user_id != item.user.id or row.room_id != item.room.id:
                problem = f"no upload {file_id!r} of yours in this room"
            elif row.message_id is not None or file_id in taken:
                problem = f"the file {file_id!r} is attached to a message already"
            if problem:
                break
        if problem or len(set(item.attachments)) != len(item.attachments):
            out.append(AttachmentRefused(problem or "the same file is attached twice"))
            continue
        taken.update(item.attachments)
        # In upload order, as history shows them.
        chosen = sorted((rows[file_id] for file_id in item.attachments), key=_upload_order)
        out.append([attachment(row) for row in chosen])
    return out


async def bind(conn: AsyncConnection, bound: Sequence[tuple[int, Collection[str]]]) -> None:
    """Attach each `(message id, file ids)` (claimed in this transaction)."""
    for message_id, file_ids in bound:
        await conn.execute(
            update(StoredFile).where(StoredFile.id.in_(file_ids)).values(message_id=message_id)
        )


def _upload_order(row: Any) -> tuple[float, str]:
    return (row.created_at, row.id)


async def attachments_of(
    s: AsyncSession, message_ids: Collection[int]
) -> dict[int, list[Attachment]]:
    """The attachments of each message (in upload order), for a page of frames."""
    if not message_ids:
        return {}
    rows = await s.execute(
        select(*_COLUMNS)
        .where(StoredFile.message_id.in_(message_ids))
        .order_by(StoredFile.created_at, StoredFile.id)
    )
    out: dict[int, list[Attachment]] = {}
    for row in rows.all():
        out.setdefault(row.message_id, []).append(attachment(row))
    return out
