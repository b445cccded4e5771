"""`export`: writes a room's history as JSON Lines or CSV, for download.

The file goes where `ExportFiles` says (the result endpoint reads it from there).
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import time
from typing import IO, Any, Literal

from pydantic import Field
from sqlalchemy import func, select

from chat.protocol import UserRef, iso
from chat.storage.attachments import attachments_of
from chat.storage.models import Message, User
from chat.tasks.context import TaskContext, TaskDeps
from chat.tasks.registry import TaskParams, task_kind
from chat.tasks.status import TaskFailed, TaskRefused

EXPORT_BATCH = 500
# Rest after each batch, relative to the time it took: the export uses at most a third
# of the event loop and the GIL (bench/export_latency.py: p99 chat latency 21 -> 42 ms
# instead of 18 -> 128 ms unthrottled, at ~12k rows/s instead of ~35k).
EXPORT_REST = 2.0
# A deleted message keeps its row with an empty body (`deleted` true): its text is
# only in the moderation history, never in an export.
# `attachments`: the message's files (`{id, name, size, content_type}`), as JSON in CSV.
CSV_COLUMNS = (
    "room",
    "seq",
    "id",
    "ts",
    "user_id",
    "user",
    "body",
    "edited_at",
    "deleted",
    "attachments",
)


class ExportParams(TaskParams):
    room: str = Field(min_length=1, max_length=200, title="Room")
    format: Literal["jsonl", "csv"] = Field("jsonl", title="Format")


async def _readable_room(deps: TaskDeps, user: UserRef, params: ExportParams) -> None:
    if await deps.rooms.room_for(params.room, user) is None:
        raise TaskRefused(404, "no such room, or you may not read it")


@task_kind("export", ExportParams, check=_readable_room)
async def export(ctx: TaskContext, params: ExportParams) -> dict[str, Any]:
    """Write a room's history as JSON Lines or CSV, oldest first, for download.

    Messages up to the room's newest seq at the start are exported, read in
    keyset-paginated batches (`seq > last`), so memory stays flat however long
    the history is and live traffic does not make the export chase its tail.
    After each batch it rests twice as long as the batch took, so chat in the
    same process keeps its latency.
    """
    db, files = ctx.deps.db, ctx.deps.exports
    room = await ctx.deps.rooms.room_for(params.room, ctx.user)
    if room is None:
        raise TaskFailed("the room no longer exists or you may no longer read it")
    upto = room.last_seq
    async with db.read() as s:
        total = int(
            await s.scalar(
                select(func.count(Message.id)).where(
                    Message.room_id == room.id, Message.seq <= upto
                )
            )
            or 0
        )
    files.folder.mkdir(parents=True, exist_ok=True)
    final = files.path(ctx.id, params.format)
    partial = files.partial(ctx.id, params.format)
    written = 0
    after = 0
    out = await asyncio.to_thread(partial.open, "w", encoding="utf-8", newline="")
    try:
        if params.format == "csv":
            await asyncio.to_thread(csv.writer(out).writerow, CSV_COLUMNS)
        await ctx.progress(0, total, f"0 of {total} messages")
        while True:
            query = (
                select(
                    Message.seq,
                    Message.id,
                    Message.created_at,
                    Message.body,
                    User.id,
                    User.username,
                    Message.edited_at,
                    Message.deleted,
                )
                .join(User, User.id == Message.user_id)
                .where(Message.room_id == room.id, Message.seq > after, Message.seq <= upto)
                .order_by(Message.seq)
                .limit(EXPORT_BATCH)
            )
            began = time.perf_counter()
            async with db.read() as s:
                rows: list[tuple[Any, ...]] = [tuple(r) for r in (await s.execute(query)).all()]
                attached = await attachments_of(s, [r[1] for r in rows])
            if not rows:
                break
            listed = {
                mid: [a.model_dump(include=LISTED) for a in found]
                for mid, found in attached.items()
            }
            await asyncio.to_thread(_write_batch, out, params.format, room.name, rows, listed)
            written += len(rows)
            after = int(rows[-1][0])
            await ctx.progress(written, max(total, written), f"{written} of {total} messages")
            # Rest as long as the batch took: live chat gets the loop (and the GIL) back.
            await asyncio.sleep((time.perf_counter() - began) * EXPORT_REST)
        await asyncio.to_thread(out.close)
        os.replace(partial, final)
    except BaseException:
        out.close()
        partial.unlink(missing_ok=True)
        raise
    return {
        "room": room.name,
        "format": params.format,
        "rows": written,
        "last_seq": upto,
        "bytes": final.stat().st_size,
        "file": final.name,
    }


LISTED = {"id", "name", "size", "content_type"}  # what an export says of each file

# A spreadsheet reads a cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """`value` for a CSV cell: a leading `'` defuses what would start a formula."""
    return "'" + value if value[:1] in FORMULA_STARTS else value


def _write_batch(
    out: IO[str],
    fmt: str,
    room: str,
    rows: list[tuple[Any, ...]],
    files: dict[int, list[dict[str, Any]]],
) -> None:
    if fmt == "csv":
        writer = csv.writer(out)
        safe_room = csv_cell(room)
        writer.writerows(
            (
                safe_room,
                seq,
                mid,
                iso(ts),
                uid,
                csv_cell(name),
                csv_cell(body),
                iso(edited) if edited is not None else "",
                "true" if deleted else "false",
                json.dumps(files.get(mid, []), ensure_ascii=False),
            )
            for seq, mid, ts, body, uid, name, edited, deleted in rows
        )
        return
    out.write(
        "".join(
            json.dumps(
                {
                    "room": room,
                    "seq": seq,
                    "id": mid,
                    "ts": iso(ts),
                    "user": {"id": uid, "name": name},
                    "body": body,
                    "edited_at": iso(edited) if edited is not None else None,
                    "deleted": bool(deleted),
                    "attachments": files.get(mid, []),
                },
                ensure_ascii=False,
            )
            + "\n"
            for seq, mid, ts, body, uid, name, edited, deleted in rows
        )
    )
