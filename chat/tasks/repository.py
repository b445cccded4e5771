"""All SQL on the `tasks` table.

The row is the source of truth from the first moment. Every change of status is a
conditional UPDATE (`WHERE status = ...`), so two processes racing for one task (a
claim against a cancel, two sweepers) settle it in the database: the one whose
UPDATE touched the row won.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, func, or_, select, update

from chat.storage.models import Task, User
from chat.tasks.status import ACTIVE, TaskStatus

if TYPE_CHECKING:
    from chat.storage.db import Database

_ACTIVE = [a.value for a in ACTIVE]
# The `worker` of a task waiting in the site's queue (Redis) for a `chat worker`: no
# process owns it (or heartbeats it) until one claims it.
QUEUE_OWNER = "queue"


class TaskRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- writing ------------------------------------------------------------------

    async def insert(
        self, task_id: str, kind: str, params: dict[str, Any], user_id: int, worker: str, now: float
    ) -> None:
        """Store a new task, `queued` and owned by `worker`."""
        async with self.db.write() as s:
            s.add(
                Task(
                    id=task_id,
                    kind=kind,
                    params=json.dumps(params),
                    status=TaskStatus.QUEUED.value,
                    progress=0.0,
                    started_by=user_id,
                    created_at=now,
                    updated_at=now,
                    worker=worker,
                    heartbeat_at=now,
                )
            )

    async def claim(self, task_id: str, worker: str, now: float) -> bool:
        """Queued -> running for `worker`; False when it was cancelled or swept meanwhile."""
        async with self.db.write() as s:
            claimed = await s.execute(
                update(Task)
                .where(Task.id == task_id, Task.status == TaskStatus.QUEUED.value)
                .values(
                    status=TaskStatus.RUNNING.value,
                    started_at=now,
                    updated_at=now,
                    heartbeat_at=now,
                    worker=worker,
                )
            )
        return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]

    async def save_progress(self, task_id: str, progress: float, detail: str | None) -> None:
        async with self.db.write() as s:
            await s.execute(
                update(Task)
                .where(Task.id == task_id, Task.status == TaskStatus.RUNNING.value)
                .values(progress=progress, detail=detail, updated_at=time.time())
            )

    async def finish(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        progress: float,
        detail: str | None,
        error: str | None,
        result: dict[str, Any] | None,
        now: float,
    ) -> None:
        """Store the final status of a task that is still active."""
        async with self.db.write() as s:
            await s.execute(
                update(Task)
                .where(Task.id == task_id, Task.status.in_(_ACTIVE))
                .values(
                    status=status.value,
                    progress=progress,
                    detail=detail,
                    error=error,
                    result=json.dumps(result) if result is not None else None,
                    finished_at=now,
                    updated_at=now,
                )
            )

    async def cancel_queued(self, task_id: str, now: float) -> bool:
        """Queued -> cancelled directly (its process has not started it)."""
        async with self.db.write() as s:
            done = await s.execute(
                update(Task)
                .where(Task.id == task_id, Task.status == TaskStatus.QUEUED.value)
                .values(status=TaskStatus.CANCELLED.value, finished_at=now, updated_at=now)
            )
        return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    async def request_cancel(self, task_id: str) -> None:
        """Flag a task running on another process; that process stops it."""
        async with self.db.write() as s:
            await s.execute(
                update(Task)
                .where(Task.id == task_id, Task.status == TaskStatus.RUNNING.value)
                .values(cancel_requested=True)
            )

    async def heartbeat(self, task_ids: Sequence[str]) -> None:
        async with self.db.write() as s:
            await s.execute(
                update(Task).where(Task.id.in_(task_ids)).values(heartbeat_at=time.time())
            )

    async def mark_interrupted(self, task: Task, error: str, now: float) -> bool:
        """An orphan -> failed, unless it changed (or another process marked it) meanwhile."""
        async with self.db.write() as s:
            done = await s.execute(
                update(Task)
                .where(Task.id == task.id, Task.status == task.status, Task.worker == task.worker)
                .values(
                    status=TaskStatus.FAILED.value, error=error, finished_at=now, updated_at=now
                )
            )
        return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    # --- reading ------------------------------------------------------------------

    async def get(self, task_id: str) -> tuple[Task, User] | None:
        """A task and its starter."""
        async with self.db.read() as s:
            found = (
                await s.execute(
                    select(Task, User)
                    .join(User, User.id == Task.started_by)
                    .where(Task.id == task_id)
                )
            ).first()
        return (found[0], found[1]) if found else None

    async def rows(
        self,
        owner: int | None,
        *,
        active: bool,
        limit: int,
        before: float | None = None,
        changed_since: float | None = None,
    ) -> Sequence[tuple[Task, User]]:
        """Newest first; `active` with `changed_since` also takes tasks updated since then."""
        query = (
            select(Task, User)
            .join(User, User.id == Task.started_by)
            .order_by(Task.created_at.desc(), Task.id.desc())
            .limit(limit)
        )
        if owner is not None:
            query = query.where(Task.started_by == owner)
        if active:
            is_active: ColumnElement[bool] = Task.status.in_(_ACTIVE)
            if changed_since is not None:
                is_active = or_(is_active, Task.updated_at >= changed_since)
            query = query.where(is_active)
        if before is not None:
            query = query.where(Task.created_at < before)
        async with self.db.read() as s:
            return (await s.execute(query)).tuples().all()

    async def finished_since(
        self, since: float, limit: int = 100_000
    ) -> Sequence[tuple[float, str]]:
        """`(finished_at, status)` of the tasks that finished after `since` (the
        console's task throughput chart)."""
        query = (
            select(Task.finished_at, Task.status)
            .where(Task.finished_at >= since)
            .order_by(Task.finished_at)
            .limit(limit)
        )
        async with self.db.read() as s:
            rows = (await s.execute(query)).tuples().all()
        return [(float(at), status) for at, status in rows if at is not None]

    async def workers(self) -> Sequence[tuple[str, int, float]]:
        """`(worker, active tasks, newest heartbeat)` of every process holding a queued
        or running task: the task workers seen through their heartbeats."""
        query = (
            select(Task.worker, func.count(Task.id), func.max(Task.heartbeat_at))
            .where(Task.status.in_(_ACTIVE), Task.worker.is_not(None))
            .group_by(Task.worker)
        )
        async with self.db.read() as s:
            rows = (await s.execute(query)).tuples().all()
        return [(str(w), int(n), float(beat or 0.0)) for w, n, beat in rows]

    async def count_active(self, user_id: int) -> int:
        async with self.db.read() as s:
            count = await s.scalar(
                select(func.count(Task.id)).where(
                    Task.started_by == user_id, Task.status.in_(_ACTIVE)
                )
            )
        return int(count or 0)

    async def queue_stats(self, now: float) -> tuple[int, float]:
        """(tasks queued and not started, seconds the oldest of them has waited)."""
        async with self.db.read() as s:
            row = (
                await s.execute(
                    select(func.count(Task.id), func.min(Task.created_at)).where(
                        Task.status == TaskStatus.QUEUED.value
                    )
                )
            ).one()
        count, oldest = row
        return int(count or 0), max(0.0, now - oldest) if oldest is not None else 0.0

    async def cancel_requested(self, task_ids: Sequence[str]) -> Sequence[str]:
        """Which of these tasks another process asked to cancel."""
        async with self.db.read() as s:
            return (
                await s.scalars(
                    select(Task.id).where(Task.id.in_(task_ids), Task.cancel_requested.is_(True))
                )
            ).all()

    async def waiting(self, cutoff: float) -> Sequence[tuple[Task, User]]:
        """Tasks queued on the site's queue before `cutoff`, not yet claimed."""
        async with self.db.read() as s:
            return (
                (
                    await s.execute(
                        select(Task, User)
                        .join(User, User.id == Task.started_by)
                        .where(
                            Task.status == TaskStatus.QUEUED.value,
                            Task.worker == QUEUE_OWNER,
                            Task.created_at < cutoff,
                        )
                    )
                )
                .tuples()
                .all()
            )

    async def orphans(self, worker: str, cutoff: float) -> Sequence[tuple[Task, User]]:
        """Active tasks of other workers whose last heartbeat is older than `cutoff`
        (not those waiting in the site's queue: no process owns them yet)."""
        async with self.db.read() as s:
            return (
                (
                    await s.execute(
                        select(Task, User)
                        .join(User, User.id == Task.started_by)
                        .where(
                            Task.status.in_(_ACTIVE),
                            (Task.worker.is_(None)) | (Task.worker != worker),
                            (Task.heartbeat_at.is_(None)) | (Task.heartbeat_at < cutoff),
                            or_(
                                Task.status != TaskStatus.QUEUED.value,
                                Task.worker.is_(None),
                                Task.worker != QUEUE_OWNER,
                            ),
                        )
                    )
                )
                .tuples()
                .all()
            )
