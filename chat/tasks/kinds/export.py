"""The built-in task kinds: demo, export, purge and import_users (see docs/tasks.md).

Each kind works in small batches, each batch in its own short transaction, and
reports progress after every batch, so live chat keeps its turn at the database
and a cancel lands between batches.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import and_, delete, func, select

from chat.models import Message, Room, User
from chat.protocol import UserRef, iso
from chat.store import Conflict, InputError
from chat.tasks.runner import TaskContext, TaskFailed, TaskRefused, task_kind

if TYPE_CHECKING:
    from chat.services import Services

EXPORT_BATCH = 500
# Rest after each batch, relative to the time it took: the export uses at most a third
# of the event loop and the GIL (bench/export_latency.py: p99 chat latency 21 -> 42 ms
# instead of 18 -> 128 ms unthrottled, at ~12k rows/s instead of ~35k).
EXPORT_REST = 2.0
PURGE_BATCH = 500
PURGE_PAUSE = 0.005  # least rest between purge batches (seconds)
PURGE_REST = 1.0  # rest after each batch, relative to the time it took
IMPORT_MAX_BYTES = 2_000_000
IMPORT_MAX_ROWS = 10_000
IMPORT_MAX_ERRORS = 1000
IMPORT_ROLES = ("user", "admin")
DEMO_MAX_SECONDS = 3600.0


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, coerce_numbers_to_str=True)


# --- demo -------------------------------------------------------------------------


class DemoParams(_Params):
    steps: int = Field(10, ge=1, le=10_000, title="Steps", description="how many steps")
    delay: float = Field(0.5, ge=0, le=60, title="Delay", description="seconds per step")
    fail_at: float | None = Field(
        None,
        ge=0,
        le=1,
        title="Fail at",
        description="for testing: fail once progress reaches this fraction (0.6 = 60 %)",
    )

    @model_validator(mode="after")
    def _bounded(self) -> DemoParams:
        if self.steps * self.delay > DEMO_MAX_SECONDS:
            raise ValueError(f"steps * delay must be at most {DEMO_MAX_SECONDS:g} seconds")
        return self


async def _demo_allowed(services: Services, user: UserRef, params: DemoParams) -> None:
    limit = services.settings.demo_max_seconds_user
    if user.role != "admin" and params.steps * params.delay > limit:
        raise TaskRefused(422, f"steps * delay must be at most {limit:g} seconds (non-admins)")


@task_kind("demo", DemoParams, check=_demo_allowed)
async def demo(ctx: TaskContext, params: DemoParams) -> dict[str, Any]:
    """Sleep through N steps of a delay each, reporting every step (for trying the console).

    `fail_at` is the test hook for failing tasks: the task fails with a readable
    error once its progress reaches that fraction (0 fails before the first step).
    """
    steps = params.steps
    if params.fail_at == 0:
        raise TaskFailed("demo failure requested at 0 % (before the first step)")
    for step in range(1, steps + 1):
        await asyncio.sleep(params.delay)
        await ctx.progress(step, steps, f"step {step} of {steps}")
        if params.fail_at is not None and step / steps >= params.fail_at:
            raise TaskFailed(
                f"demo failure requested at {params.fail_at:.0%} (step {step} of {steps})"
            )
    return {"steps": steps}


# --- export -----------------------------------------------------------------------


class ExportParams(_Params):
    room: str = Field(min_length=1, max_length=200, title="Room")
    format: Literal["jsonl", "csv"] = Field("jsonl", title="Format")


CSV_COLUMNS = ("room", "seq", "id", "ts", "user_id", "user", "body")
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


async def _readable_room(services: Services, user: UserRef, params: ExportParams) -> None:
    if await services.store.room_for(params.room, user) is None:
        raise TaskRefused(404, "no such room, or you may not read it")


def export_path(exports_dir: Path, task_id: str, fmt: str) -> Path:
    """Where an export task's file lives (the name is the task id: no user input)."""
    return exports_dir / f"{task_id}.{fmt}"


@task_kind("export", ExportParams, check=_readable_room)
async def export(ctx: TaskContext, params: ExportParams) -> dict[str, Any]:
    """Write a room's history as JSON Lines or CSV, oldest first, for download.

    Messages up to the room's newest seq at the start are exported, read in
    keyset-paginated batches (`seq > last`), so memory stays flat however long
    the history is and live traffic does not make the export chase its tail.
    After each batch it rests twice as long as the batch took, so chat in the
    same process keeps its latency.
    """
    services = ctx.services
    room = await services.store.room_for(params.room, ctx.user)
    if room is None:
        raise TaskFailed("the room no longer exists or you may no longer read it")
    upto = room.last_seq
    async with services.db.read() as s:
        total = int(
            await s.scalar(
                select(func.count(Message.id)).where(
                    Message.room_id == room.id, Message.seq <= upto
                )
            )
            or 0
        )
    ctx.exports_dir.mkdir(parents=True, exist_ok=True)
    final = export_path(ctx.exports_dir, ctx.id, params.format)
    partial = final.with_suffix(final.suffix + ".part")
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
                )
                .join(User, User.id == Message.user_id)
                .where(Message.room_id == room.id, Message.seq > after, Message.seq <= upto)
                .order_by(Message.seq)
                .limit(EXPORT_BATCH)
            )
            began = time.perf_counter()
            async with services.db.read() as s:
                rows: list[tuple[Any, ...]] = [tuple(r) for r in (await s.execute(query)).all()]
            if not rows:
                break
            await asyncio.to_thread(_write_batch, out, params.format, room.name, rows)
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


# A spreadsheet reads a cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """`value` for a CSV cell: a leading `'` defuses what would start a formula."""
    return "'" + value if value[:1] in FORMULA_STARTS else value


def _write_batch(out: IO[str], fmt: str, room: str, rows: list[tuple[Any, ...]]) -> None:
    if fmt == "csv":
        writer = csv.writer(out)
        safe_room = csv_cell(room)
        writer.writerows(
            (safe_room, seq, mid, iso(ts), uid, csv_cell(name), csv_cell(body))
            for seq, mid, ts, body, uid, name in rows
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
                },
                ensure_ascii=False,
            )
            + "\n"
            for seq, mid, ts, body, uid, name in rows
        )
    )


# --- purge ------------------------------------------------------------------------


class PurgeParams(_Params):
    older_than_days: float = Field(
        ge=0, le=36_500, title="Older than (days)", description="delete messages older than this"
    )
    room: str | None = Field(
        None, max_length=200, title="Room", description="only this room (default: every room)"
    )


async def _purge_room_exists(services: Services, user: UserRef, params: PurgeParams) -> None:
    if params.room is not None and await services.store.room_for(params.room, user) is None:
        raise TaskRefused(404, "no such room")


@task_kind("purge", PurgeParams, admin_only=True, check=_purge_room_exists)
async def purge(ctx: TaskContext, params: PurgeParams) -> dict[str, Any]:
    """Delete messages older than N days (optionally in one room), in small batches.

    Each batch of at most 500 messages is its own short write transaction,
    followed by a short pause, so senders in busy rooms wait milliseconds at most.
    A cancelled or failed purge leaves the batches done so far deleted; running
    it again finishes the job.
    """
    db = ctx.services.db
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
            if ids:
                await s.execute(delete(Message).where(Message.id.in_(ids)))
        if not ids:
            break
        deleted += len(ids)
        await ctx.progress(deleted, max(total, deleted), f"{deleted} of {total} messages deleted")
        # Rest at least as long as the batch held the write lock: senders go first.
        await asyncio.sleep(max(PURGE_PAUSE, (time.perf_counter() - began) * PURGE_REST))
    return {"deleted": deleted, "cutoff": iso(cutoff), "room": params.room}


# --- import_users -----------------------------------------------------------------


class ImportParams(_Params):
    csv: str = Field(
        max_length=IMPORT_MAX_BYTES,
        title="Users (CSV)",
        description="CSV text: username,password[,role] per line; a header line is optional",
    )

    @field_validator("csv")
    @classmethod
    def _rows_bounded(cls, value: str) -> str:
        lines = value.count("\n") + 1
        if lines > IMPORT_MAX_ROWS + 1:
            raise ValueError(f"at most {IMPORT_MAX_ROWS} rows per import")
        if not value.strip():
            raise ValueError("the CSV is empty")
        return value


def _import_summary(params: ImportParams) -> dict[str, Any]:
    # The CSV holds passwords: the stored row keeps only its size.
    return {"csv": f"<{len(params.csv)} characters, {len(_rows(params.csv))} rows: not stored>"}


def _rows(text: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of each non-blank row, without a `username,...` header."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    rows = [(reader.line_num, cells) for cells in reader if any(c.strip() for c in cells)]
    if rows and rows[0][1] and rows[0][1][0].strip().casefold() == "username":
        rows = rows[1:]
    return rows


@task_kind(
    "import_users", ImportParams, admin_only=True, stored=_import_summary, upload_field="csv"
)
async def import_users(ctx: TaskContext, params: ImportParams) -> dict[str, Any]:
    """Create accounts from CSV rows `username,password[,role]`, reporting errors per row.

    Rows that fail (bad name, short password, unknown role, name taken) are listed
    in the result with their line number; the others are created. Passwords are
    hashed one at a time so sign-ins keep their share of the hashing slots.
    """
    rows = _rows(params.csv)
    total = len(rows)
    created: list[str] = []
    errors: list[dict[str, Any]] = []
    failed = 0
    accounts = ctx.services.accounts
    for index, (line, cells) in enumerate(rows, 1):
        cells = [c.strip() for c in cells]
        username = cells[0] if cells else ""
        problem: str | None = None
        if len(cells) < 2 or len(cells) > 3:
            problem = "expected username,password[,role]"
        else:
            role = (cells[2] if len(cells) == 3 and cells[2] else "user").casefold()
            if role not in IMPORT_ROLES:
                problem = f"role must be one of {', '.join(IMPORT_ROLES)}"
            else:
                try:
                    user = await accounts.register(username, cells[1], role)
                    created.append(user.username)
                except (InputError, Conflict) as exc:
                    problem = str(exc)
        if problem is not None:
            failed += 1
            if len(errors) < IMPORT_MAX_ERRORS:
                errors.append({"line": line, "username": username[:64], "error": problem})
        await ctx.progress(index, total, f"{index} of {total} rows ({failed} failed)")
    return {
        "total": total,
        "created": len(created),
        "failed": failed,
        "errors": errors,
        "errors_truncated": failed > len(errors),
    }
