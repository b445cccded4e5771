"""Long-running tasks: a registry of kinds and a runner with live, throttled progress.

A kind is an async function registered with `@task_kind(name, Params)`. It gets a
`TaskContext` (with `await ctx.progress(done, total, detail)`) and its validated
parameters, and returns a JSON-able result (or raises `TaskFailed` with a readable
reason). Cancellation is cooperative: `cancel` cancels the asyncio task, so the
kind sees `CancelledError` at its next `await` (every `progress` call is one).

The `tasks` row is the source of truth from the first moment: `submit` inserts
it `queued` before answering. Each process runs at most `task_concurrency` tasks;
the rest wait `queued`, admins' tasks first, then oldest first, and a non-admin
runs at most one task at a time (so a user's long tasks cannot hold every slot
while an admin's purge waits). A running process heartbeats its tasks; a task
whose heartbeat is older than three intervals belongs to a dead process and is
marked `failed` (interrupted) by whichever process notices first, at start-up or
later, with an alert. A cancel made on another process is stored
(`cancel_requested`) and picked up by the runner within a second.

Progress goes out as `task` frames to the `admins` channel and to the starter's
own channel (admins get it once, through `admins`). Progress frames are throttled
to one per `task_progress_interval` per task (the newest value is sent when the
interval ends); status changes are sent at once and the final status is sent
last, after which nothing else is sent for the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import math
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import ColumnElement, func, or_, select, update

from chat.models import Task, User
from chat.protocol import TaskFrame, UserRef, encode, iso, now_iso
from chat.store import user_ref
from chat.ttl_cache import TTLCache

if TYPE_CHECKING:
    from chat.hub import Connection
    from chat.services import Services

log = logging.getLogger(__name__)

P = TypeVar("P", bound=BaseModel)
MAX_DETAIL = 500
MAX_ERROR = 2000
SAVE_INTERVAL = 1.0  # seconds between progress writes to the database per task
CANCEL_POLL = 1.0  # seconds between looks for cancels made on other processes
CANCEL_WAIT = 5.0  # how long `cancel` waits for a local task to stop
STOP_WAIT = 5.0  # how long shutdown waits for running tasks to unwind
STALE_AFTER = 3  # heartbeat intervals without a beat before a task counts as orphaned
PRUNE_EVERY = 3600.0  # seconds between sweeps of old export files
GREETING_CACHE_SECONDS = 1.0  # how long new sockets share one read of the active tasks
FINAL_FRAME_RETRIES = 60  # a refused final task frame is published again this often,
FINAL_FRAME_RETRY_DELAY = 1.0  # this many seconds apart


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (TaskStatus.QUEUED, TaskStatus.RUNNING)
FINAL = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class TaskRefused(Exception):
    """A start, read or cancel that is not allowed; `status` is the HTTP status to answer."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


class TaskFailed(Exception):
    """Raised by a kind for a failure whose message is the task's readable error."""


class Progress(Protocol):
    async def __call__(self, done: float, total: float, detail: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a running kind gets besides its parameters."""

    id: str
    user: UserRef
    services: Services
    progress: Progress

    @property
    def exports_dir(self) -> Path:
        return self.services.settings.state_dir / "exports"


Run = Callable[[TaskContext, P], Awaitable[dict[str, Any] | None]]
Check = Callable[["Services", UserRef, P], Awaitable[None]]
Stored = Callable[[P], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class TaskKind(Generic[P]):
    """A registered kind: how to validate, authorize, store and run it."""

    name: str
    params: type[P]
    run: Run[P]
    admin_only: bool = False
    check: Check[P] | None = None
    stored: Stored[P] | None = None  # what of the params goes in the row (secrets left out)
    upload_field: str | None = None  # a multipart file upload fills this parameter
    description: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.name,
            "admin_only": self.admin_only,
            "description": self.description,
            "upload_field": self.upload_field,
            "params": self.params.model_json_schema(),
        }


REGISTRY: dict[str, TaskKind[Any]] = {}


def task_kind(
    name: str,
    params: type[P],
    *,
    admin_only: bool = False,
    check: Check[P] | None = None,
    stored: Stored[P] | None = None,
    upload_field: str | None = None,
) -> Callable[[Run[P]], Run[P]]:
    """Register an async function as the task kind `name` (its docstring describes it)."""

    def register(fn: Run[P]) -> Run[P]:
        if name in REGISTRY:
            raise ValueError(f"task kind {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().split("\n\n", 1)[0].replace("`", "")
        REGISTRY[name] = TaskKind(
            name, params, fn, admin_only, check, stored, upload_field, " ".join(doc.split())
        )
        return fn

    return register


def validation_detail(exc: ValidationError, prefix: str = "params") -> list[dict[str, Any]]:
    """pydantic errors as FastAPI-style 422 details, located under `prefix`."""
    return [
        {"loc": [prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def _queue_order(live: _Live) -> tuple[bool, float]:
    return (live.user.role != "admin", live.created_at)


@dataclass(eq=False)
class _Live:
    """A task this process owns (queued or running)."""

    id: str
    kind: TaskKind[Any]
    params: BaseModel
    user: UserRef
    status: TaskStatus
    created_at: float
    progress: float = 0.0
    detail: str | None = None
    started_at: float | None = None
    runner: asyncio.Task[None] | None = None
    interrupted: bool = False
    finishing: bool = False
    sent_at: float = -math.inf
    saved_at: float = -math.inf
    trailing: asyncio.TimerHandle | None = None
    final_sent: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class TaskRunner:
    """Starts, runs, reports, cancels and lists tasks (one per process, on `Services`)."""

    def __init__(self, services: Services) -> None:
        importlib.import_module("chat.tasks.kinds")  # registers the built-in kinds
        self.services = services
        self.settings = services.settings
        self.db = services.db
        self.worker = worker_id()
        self._live: dict[str, _Live] = {}
        self._queue: deque[str] = deque()
        self._running: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        # Every active task, shared by the greetings of a burst of new sockets.
        self._active_cache: TTLCache[None, Sequence[tuple[Task, User]]] = TTLCache(
            GREETING_CACHE_SECONDS, 1
        )

    @property
    def kinds(self) -> dict[str, TaskKind[Any]]:
        return REGISTRY

    # --- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Mark tasks orphaned by dead processes as failed, then start the watcher."""
        try:
            await self.sweep_orphans()
        except Exception:
            log.exception("could not sweep orphaned tasks at start-up")
        self._watcher = asyncio.create_task(self._watch(), name="task-watcher")

    async def stop(self) -> None:
        """Interrupt every local task: each is marked failed (interrupted) with an alert."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        queued = [live for live in self._live.values() if live.status == TaskStatus.QUEUED]
        running = [live.runner for live in self._live.values() if live.runner is not None]
        self._queue.clear()
        for live in queued:
            await self._finish(
                live, TaskStatus.FAILED, None, "interrupted: the server shut down before it ran"
            )
        for live in list(self._live.values()):
            self._interrupt(live, shutdown=True)
        if running:
            await asyncio.wait(running, timeout=STOP_WAIT)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # --- starting -----------------------------------------------------------------

    async def submit(
        self, kind_name: str, raw_params: Any, user: UserRef, *, source: str = "api"
    ) -> dict[str, Any]:
        """Validate, authorize and store a new task, queue it, and return its view.

        Raises `TaskRefused` (422 unknown kind or bad params, 403 admin-only kind,
        404 unreadable room, 429 too many active tasks, 503 shutting down).
        """
        if self._stopping or self.services.draining:
            raise TaskRefused(503, "the server is shutting down; try again shortly")
        kind = REGISTRY.get(kind_name)
        if kind is None:
            known = ", ".join(sorted(REGISTRY))
            raise TaskRefused(422, f"unknown task kind {kind_name[:40]!r}; known kinds: {known}")
        if kind.admin_only and user.role != "admin":
            raise TaskRefused(403, f"only admins may start {kind.name!r} tasks")
        if raw_params is None:
            raw_params = {}
        if not isinstance(raw_params, dict):
            raise TaskRefused(422, "params must be a JSON object")
        try:
            params = kind.params.model_validate(raw_params)
        except ValidationError as exc:
            raise TaskRefused(422, validation_detail(exc)) from None
        if user.role != "admin":
            active = await self._count_active(user.id)
            if active >= self.settings.tasks_per_user:
                raise TaskRefused(
                    429,
                    f"you have {active} unfinished tasks; wait for one to finish or cancel one",
                )
        if kind.check is not None:
            await kind.check(self.services, user, params)
        stored = kind.stored(params) if kind.stored else params.model_dump(mode="json")
        now = time.time()
        task_id = str(uuid.uuid4())
        async with self.db.write() as s:
            s.add(
                Task(
                    id=task_id,
                    kind=kind.name,
                    params=json.dumps(stored),
                    status=TaskStatus.QUEUED.value,
                    progress=0.0,
                    started_by=user.id,
                    created_at=now,
                    updated_at=now,
                    worker=self.worker,
                    heartbeat_at=now,
                )
            )
        live = _Live(task_id, kind, params, user, TaskStatus.QUEUED, now)
        self._live[task_id] = live
        log.info("task %s (%s) queued by user %s via %s", task_id, kind.name, user.id, source)
        await self._emit(live)
        self._queue.append(task_id)
        self._pump()
        view = await self.view(task_id, user)
        assert view is not None
        return view

    def _pump(self) -> None:
        while not self._stopping and len(self._running) < self.settings.task_concurrency:
            live = self._next_queued()
            if live is None:
                return
            self._queue.remove(live.id)
            self._running.add(live.id)
            live.runner = asyncio.create_task(self._run(live), name=f"task-{live.id}")

    def _next_queued(self) -> _Live | None:
        """The queued task to run next: admins' first, then the oldest.

        A non-admin runs at most one task at a time (in this process); their
        others wait, so one user cannot fill every slot and starve the rest.
        """
        busy = {
            live.user.id
            for task_id in self._running
            if (live := self._live.get(task_id)) is not None and live.user.role != "admin"
        }
        best: _Live | None = None
        for task_id in list(self._queue):
            live = self._live.get(task_id)
            if live is None or live.status != TaskStatus.QUEUED:
                self._queue.remove(task_id)
                continue
            if live.user.role != "admin" and live.user.id in busy:
                continue
            if best is None or _queue_order(live) < _queue_order(best):
                best = live
        return best

    async def _run(self, live: _Live) -> None:
        try:
            try:
                claimed = await self._claim(live)
            except asyncio.CancelledError:  # cancelled while being claimed
                await self._finish(live, *self._cancelled(live))
                return
            if claimed:
                await self._execute(live)
            else:  # cancelled (or swept) elsewhere while it waited
                self._live.pop(live.id, None)
        finally:
            self._running.discard(live.id)
            self._pump()

    async def _claim(self, live: _Live) -> bool:
        now = time.time()
        async with self.db.write() as s:
            claimed = await s.execute(
                update(Task)
                .where(Task.id == live.id, Task.status == TaskStatus.QUEUED.value)
                .values(
                    status=TaskStatus.RUNNING.value,
                    started_at=now,
                    updated_at=now,
                    heartbeat_at=now,
                    worker=self.worker,
                )
            )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return False
        live.status = TaskStatus.RUNNING
        live.started_at = now
        await self._emit(live)
        return True

    async def _execute(self, live: _Live) -> None:
        ctx = TaskContext(live.id, live.user, self.services, self._reporter(live))
        result: dict[str, Any] | None = None
        error: str | None = None
        try:
            result = await live.kind.run(ctx, live.params)
            status = TaskStatus.SUCCEEDED
        except asyncio.CancelledError:
            status, _, error = self._cancelled(live)
        except TaskFailed as exc:
            status, error = TaskStatus.FAILED, str(exc) or "failed"
        except Exception as exc:
            log.exception("task %s (%s) crashed", live.id, live.kind.name)
            status, error = TaskStatus.FAILED, f"{type(exc).__name__}: {exc}"
        await self._finish(live, status, result, error)

    @staticmethod
    def _cancelled(live: _Live) -> tuple[TaskStatus, None, str | None]:
        if live.interrupted:
            return TaskStatus.FAILED, None, "interrupted: the server shut down"
        return TaskStatus.CANCELLED, None, None

    def _interrupt(self, live: _Live, *, shutdown: bool = False) -> bool:
        """Cancel a local task's runner unless it is already finishing."""
        if live.runner is None or live.finishing or live.runner.done():
            return False
        live.interrupted = live.interrupted or shutdown
        live.runner.cancel()
        return True

    def _reporter(self, live: _Live) -> Progress:
        interval = self.settings.task_progress_interval

        async def progress(done: float, total: float, detail: str | None = None) -> None:
            fraction = done / total if total > 0 else 0.0
            live.progress = max(0.0, min(1.0, fraction))
            live.detail = detail[:MAX_DETAIL] if detail else None
            now = time.monotonic()
            due = live.sent_at + interval
            if now >= due:
                if live.trailing is not None:
                    live.trailing.cancel()
                    live.trailing = None
                await self._emit(live)
            elif live.trailing is None:
                live.trailing = asyncio.get_running_loop().call_later(
                    due - now, self._send_trailing, live
                )
            if now - live.saved_at >= SAVE_INTERVAL:
                live.saved_at = now
                await self._save_progress(live)
            await asyncio.sleep(0)  # a cancellation point even in a busy loop

        return progress

    def _send_trailing(self, live: _Live) -> None:
        live.trailing = None
        if live.status == TaskStatus.RUNNING and not live.final_sent:
            self._spawn(self._emit(live))

    async def _save_progress(self, live: _Live) -> None:
        try:
            async with self.db.write() as s:
                await s.execute(
                    update(Task)
                    .where(Task.id == live.id, Task.status == TaskStatus.RUNNING.value)
                    .values(progress=live.progress, detail=live.detail, updated_at=time.time())
                )
        except Exception as exc:  # progress is advisory; the final write matters
            log.warning("could not save the progress of task %s: %r", live.id, exc)

    async def _finish(
        self,
        live: _Live,
        status: TaskStatus,
        result: dict[str, Any] | None,
        error: str | None,
    ) -> None:
        """Store the final status (retrying), send the final frame, alert on failure."""
        live.finishing = True
        if live.trailing is not None:
            live.trailing.cancel()
            live.trailing = None
        now = time.time()
        error = error[:MAX_ERROR] if error else None
        progress = 1.0 if status == TaskStatus.SUCCEEDED else live.progress
        values: dict[str, Any] = {
            "status": status.value,
            "progress": progress,
            "detail": live.detail,
            "error": error,
            "result": json.dumps(result) if result is not None else None,
            "finished_at": now,
            "updated_at": now,
        }
        for attempt in range(5):
            try:
                async with self.db.write() as s:
                    await s.execute(
                        update(Task)
                        .where(Task.id == live.id, Task.status.in_([a.value for a in ACTIVE]))
                        .values(**values)
                    )
                break
            except Exception as exc:
                log.warning("could not store the end of task %s: %r", live.id, exc)
                await asyncio.sleep(0.2 * 2**attempt)
        # Only now, with the row final, do readers see the final status.
        live.status, live.progress = status, progress
        self._live.pop(live.id, None)
        await self._emit(live, final_at=now, error=error)
        log.info(
            "task %s (%s) %s%s", live.id, live.kind.name, status, f": {error}" if error else ""
        )
        if status == TaskStatus.FAILED:
            await self.services.alerts.raise_alert(
                "error", f"task {live.kind.name} {live.id[:8]} failed: {error}"
            )

    # --- frames -------------------------------------------------------------------

    async def _emit(
        self, live: _Live, *, final_at: float | None = None, error: str | None = None
    ) -> None:
        """Send the task's current state; after the final frame nothing more is sent."""
        async with live.lock:
            if live.final_sent:
                return
            if final_at is not None:
                live.final_sent = True
            live.sent_at = time.monotonic()
            frame = TaskFrame(
                id=live.id,
                kind=live.kind.name,
                status=live.status.value,
                progress=round(live.progress, 4),
                detail=live.detail,
                ts=now_iso(),
                user=live.user,
                started_at=iso(live.started_at) if live.started_at else None,
                finished_at=iso(final_at) if final_at else None,
                error=error,
            )
            await self._publish(live.user, encode(frame), final=final_at is not None)

    async def _publish(self, starter: UserRef, payload: str, *, final: bool = True) -> None:
        """To every admin and the starter. A final frame the broker refused is tried
        again (the state is whole, so a repeat is harmless; a lost final is not)."""
        self._active_cache.clear()  # a task changed: the next greeting reads again
        hub = self.services.hub
        try:
            published = await hub.publish_admins(payload)
            if starter.role != "admin":  # admins get it once, through `admins`
                published = await hub.publish_user(starter.id, payload) and published
        except Exception as exc:
            log.warning("could not publish a task frame: %r", exc)
            published = False
        if final and not published and not self._stopping:
            self._spawn(self._republish(starter, payload))

    async def _republish(self, starter: UserRef, payload: str) -> None:
        hub = self.services.hub
        for _ in range(FINAL_FRAME_RETRIES):
            await asyncio.sleep(FINAL_FRAME_RETRY_DELAY)
            if await hub.publish_admins(payload) and (
                starter.role == "admin" or await hub.publish_user(starter.id, payload)
            ):
                return
        log.warning("gave up publishing a final task frame")

    async def greet(self, conn: Connection) -> None:
        """Push the current state of every active task the connection may see.

        Called right after `hello`, so a console that connects mid-task starts
        from the present state; live frames follow.
        """
        try:
            rows = await self._active_rows()
        except Exception:
            log.exception("could not load active tasks for a new connection")
            return
        admin = conn.user.role == "admin"
        for task, starter in reversed(rows):
            if admin or starter.id == conn.user.id:
                conn.push(encode(self._frame_of(task, starter)))

    async def _active_rows(self) -> Sequence[tuple[Task, User]]:
        """Every active task, read at most once per `GREETING_CACHE_SECONDS`.

        A burst of connections would otherwise read the same rows once each.
        Changes made here drop the copy at once; a task started on another
        process reaches a socket that connected meanwhile by its next frame.
        """
        return await self._active_cache.get(None, partial(self._rows, None, active=True, limit=200))

    async def resync(self, lost_at: float) -> None:
        """After a broker outage: re-send, to this process's connections, every task
        that is active or changed since `lost_at` (frames carry whole states, so a
        repeat is harmless; a missed final frame is not)."""
        rows = await self._rows(None, active=True, limit=200, changed_since=lost_at - 1.0)
        hub = self.services.hub
        for task, starter in reversed(rows):
            payload = encode(self._frame_of(task, starter))
            for conn in list(hub.connections):
                if conn.user.role == "admin" or conn.user.id == starter.id:
                    conn.push(payload)

    def _frame_of(self, task: Task, starter: User) -> TaskFrame:
        live = self._live.get(task.id)
        if live is not None:  # fresher than the row
            status, progress, detail = live.status.value, live.progress, live.detail
            ts = now_iso()
        else:
            status, progress, detail = task.status, task.progress, task.detail
            ts = iso(task.updated_at or task.created_at)
        return TaskFrame(
            id=task.id,
            kind=task.kind,
            status=status,  # type: ignore[arg-type]
            progress=round(progress, 4),
            detail=detail,
            ts=ts,
            user=user_ref(starter),
            started_at=iso(task.started_at) if task.started_at else None,
            finished_at=iso(task.finished_at) if task.finished_at else None,
            error=task.error,
        )

    # --- reading ------------------------------------------------------------------

    async def view(self, task_id: str, user: UserRef) -> dict[str, Any] | None:
        """A task as JSON, or None when absent or not the caller's (unless admin)."""
        row = await self._row(task_id)
        if row is None:
            return None
        task, starter = row
        if user.role != "admin" and task.started_by != user.id:
            return None
        return self._to_json(task, starter)

    async def list_tasks(
        self, user: UserRef, *, active: bool = False, limit: int = 50, before: float | None = None
    ) -> list[dict[str, Any]]:
        """Newest first: every task for admins, the caller's own for others."""
        owner = None if user.role == "admin" else user.id
        rows = await self._rows(owner, active=active, limit=limit, before=before)
        return [self._to_json(task, starter) for task, starter in rows]

    async def row(self, task_id: str) -> Task | None:
        found = await self._row(task_id)
        return found[0] if found else None

    async def _row(self, task_id: str) -> tuple[Task, User] | None:
        async with self.db.read() as s:
            found = (
                await s.execute(
                    select(Task, User)
                    .join(User, User.id == Task.started_by)
                    .where(Task.id == task_id)
                )
            ).first()
        return (found[0], found[1]) if found else None

    async def _rows(
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
            is_active: ColumnElement[bool] = Task.status.in_([a.value for a in ACTIVE])
            if changed_since is not None:
                is_active = or_(is_active, Task.updated_at >= changed_since)
            query = query.where(is_active)
        if before is not None:
            query = query.where(Task.created_at < before)
        async with self.db.read() as s:
            return (await s.execute(query)).tuples().all()

    async def _count_active(self, user_id: int) -> int:
        async with self.db.read() as s:
            count = await s.scalar(
                select(func.count(Task.id)).where(
                    Task.started_by == user_id, Task.status.in_([a.value for a in ACTIVE])
                )
            )
        return int(count or 0)

    def _to_json(self, task: Task, starter: User) -> dict[str, Any]:
        live = self._live.get(task.id)
        status = live.status.value if live else task.status
        progress = live.progress if live else task.progress
        detail = live.detail if live else task.detail
        out: dict[str, Any] = {
            "id": task.id,
            "kind": task.kind,
            "status": status,
            "progress": round(progress, 4),
            "detail": detail,
            "params": json.loads(task.params or "{}"),
            "result": json.loads(task.result) if task.result else None,
            "error": task.error,
            "user": user_ref(starter).model_dump(),
            "created_at": iso(task.created_at),
            "started_at": iso(task.started_at) if task.started_at else None,
            "finished_at": iso(task.finished_at) if task.finished_at else None,
            "cancel_requested": bool(task.cancel_requested),
        }
        if task.kind == "export" and status == TaskStatus.SUCCEEDED:
            out["download"] = f"/api/tasks/{task.id}/result"
        return out

    # --- cancelling ---------------------------------------------------------------

    async def cancel(self, task_id: str, user: UserRef) -> dict[str, Any]:
        """Cancel a queued or running task (the starter's or, for admins, any).

        A local running task is waited for (up to a few seconds) so the answer
        usually shows `cancelled`; one running on another process is flagged and
        stops within about a second. Raises `TaskRefused` (404, or 409 when finished).
        """
        found = await self._row(task_id)
        if found is None or (user.role != "admin" and found[0].started_by != user.id):
            raise TaskRefused(404, "no such task")
        task, _ = found
        if task.status in FINAL:
            raise TaskRefused(409, f"the task has already {task.status}")
        live = self._live.get(task_id)
        if live is not None and live.runner is None:  # waiting in this process's queue
            with contextlib.suppress(ValueError):
                self._queue.remove(task_id)
            await self._finish(live, TaskStatus.CANCELLED, None, None)
        elif live is not None and live.runner is not None:
            runner = live.runner
            self._interrupt(live)
            await asyncio.wait({runner}, timeout=CANCEL_WAIT)
        elif task.status == TaskStatus.QUEUED:
            await self._cancel_remote_queued(task)
        else:
            async with self.db.write() as s:
                await s.execute(
                    update(Task)
                    .where(Task.id == task_id, Task.status == TaskStatus.RUNNING.value)
                    .values(cancel_requested=True)
                )
        view = await self.view(task_id, user)
        assert view is not None
        return view

    async def _cancel_remote_queued(self, task: Task) -> None:
        now = time.time()
        async with self.db.write() as s:
            done = await s.execute(
                update(Task)
                .where(Task.id == task.id, Task.status == TaskStatus.QUEUED.value)
                .values(status=TaskStatus.CANCELLED.value, finished_at=now, updated_at=now)
            )
        if done.rowcount == 1:  # type: ignore[attr-defined]
            starter = await self.services.store.user_by_id(task.started_by)
            if starter is not None:
                task.status, task.finished_at, task.updated_at = "cancelled", now, now
                await self._publish(user_ref(starter), encode(self._frame_of(task, starter)))

    # --- liveness -----------------------------------------------------------------

    async def _watch(self) -> None:
        """Heartbeat local tasks, pick up remote cancels, sweep orphans of dead processes."""
        beat_every = self.settings.task_heartbeat_interval
        poll_every = min(CANCEL_POLL, beat_every)
        last_beat = last_sweep = time.monotonic()
        last_prune = -math.inf
        while True:
            await asyncio.sleep(poll_every)
            try:
                now = time.monotonic()
                await self._pick_up_cancels()
                if now - last_beat >= beat_every:
                    last_beat = now
                    await self._heartbeat()
                if now - last_sweep >= beat_every * STALE_AFTER:
                    last_sweep = now
                    await self.sweep_orphans()
                if now - last_prune >= PRUNE_EVERY:
                    last_prune = now
                    await asyncio.to_thread(self.prune_exports)
            except Exception:
                log.exception("task watcher iteration failed")

    def prune_exports(self) -> int:
        """Delete export files older than `export_retention_days` (and stale partials)."""
        folder = self.settings.state_dir / "exports"
        cutoff = time.time() - self.settings.export_retention_days * 86400
        removed = 0
        try:
            entries = list(folder.iterdir())
        except FileNotFoundError:
            return 0
        for path in entries:
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError as exc:
                log.warning("could not prune %s: %r", path.name, exc)
        if removed:
            log.info("pruned %d export file(s) older than the retention", removed)
        return removed

    async def _pick_up_cancels(self) -> None:
        running = [i for i, live in self._live.items() if live.status == TaskStatus.RUNNING]
        if not running:
            return
        async with self.db.read() as s:
            flagged = (
                await s.scalars(
                    select(Task.id).where(Task.id.in_(running), Task.cancel_requested.is_(True))
                )
            ).all()
        for task_id in flagged:
            live = self._live.get(task_id)
            if live is not None and self._interrupt(live):
                log.info("task %s: cancel requested on another process", task_id)

    async def _heartbeat(self) -> None:
        ids = list(self._live)
        if not ids:
            return
        async with self.db.write() as s:
            await s.execute(update(Task).where(Task.id.in_(ids)).values(heartbeat_at=time.time()))

    async def sweep_orphans(self) -> int:
        """Mark active tasks of dead processes failed (interrupted); alert for each."""
        cutoff = time.time() - self.settings.task_heartbeat_interval * STALE_AFTER
        async with self.db.read() as s:
            rows = (
                (
                    await s.execute(
                        select(Task, User)
                        .join(User, User.id == Task.started_by)
                        .where(
                            Task.status.in_([a.value for a in ACTIVE]),
                            (Task.worker.is_(None)) | (Task.worker != self.worker),
                            (Task.heartbeat_at.is_(None)) | (Task.heartbeat_at < cutoff),
                        )
                    )
                )
                .tuples()
                .all()
            )
        marked = 0
        for task, starter in rows:
            was = task.status
            error = (
                "interrupted: the server running it stopped"
                if was == TaskStatus.RUNNING
                else "interrupted: the server it was queued on stopped"
            )
            now = time.time()
            async with self.db.write() as s:
                done = await s.execute(
                    update(Task)
                    .where(Task.id == task.id, Task.status == was, Task.worker == task.worker)
                    .values(status="failed", error=error, finished_at=now, updated_at=now)
                )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                continue  # another process got there first
            marked += 1
            task.status, task.error, task.finished_at, task.updated_at = "failed", error, now, now
            await self._publish(user_ref(starter), encode(self._frame_of(task, starter)))
            await self.services.alerts.raise_alert(
                "error",
                f"task {task.kind} {task.id[:8]} (started by {starter.username}) "
                f"was {was} when its server stopped: marked failed (interrupted)",
            )
        return marked

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
