"""The runner: admission, the queue, running kinds, final statuses and cancels.

`submit` stores the row `queued` before answering. Each process runs at most
`task_concurrency` tasks; the rest wait `queued`, admins' tasks first, then oldest
first, and a non-admin runs at most one task at a time (so a user's long tasks
cannot hold every slot while an admin's purge waits). Cancellation is cooperative:
`cancel` cancels the asyncio task, so the kind sees `CancelledError` at its next
`await` (every `progress` call is one). Frames go through `TaskFrames`; heartbeats,
remote cancels and orphans are `Liveness`'s.

With the site's queue (`queue`, Redis) a chat process that does not run tasks itself
(`run_here=False`) stores the row and pushes "run it" to the queue; a `chat worker`'s
runner gets each job in `run_queued` and runs it exactly as a local task, so frames,
cancels (the row's flag), heartbeats and interrupted tasks behave the same wherever
the task runs and whichever process a console is connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from chat.storage.records import user_ref
from chat.tasks.context import TaskContext, TaskDeps
from chat.tasks.exports import ExportFiles
from chat.tasks.frames import TaskFrames
from chat.tasks.live import LiveTask
from chat.tasks.liveness import CANCEL_POLL, Liveness
from chat.tasks.registry import REGISTRY, TaskKind, resolve
from chat.tasks.repository import QUEUE_OWNER, TaskRepository
from chat.tasks.retention import Retention
from chat.tasks.status import FINAL, TaskFailed, TaskRefused, TaskStatus
from chat.tasks.views import task_json

if TYPE_CHECKING:
    from chat.config import Settings
    from chat.hub import Connection
    from chat.protocol import UserRef
    from chat.storage.db import Database
    from chat.storage.models import Task
    from chat.tasks.ports import (
        AccountMaker,
        AlertSink,
        ContentReleaser,
        FramePublisher,
        JobQueue,
        Rooms,
    )

log = logging.getLogger(__name__)

MAX_ERROR = 2000
CANCEL_WAIT = 5.0  # how long `cancel` waits for a local task to stop
STOP_WAIT = 5.0  # how long shutdown waits for running tasks to unwind
FINAL_POLL = 0.05  # seconds between reads of a task cancelled on another process
WORKER_CANCEL_POLL = 0.25  # a `chat worker` looks for cancels this often (seconds)


class TaskRequeued(Exception):
    """Raised to saq by a stopping worker for a job it got too late: saq queues it again."""


def worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class TaskRunner:
    """Starts, runs, reports, cancels and lists tasks (one per process).

    Built from the parts it uses: the settings, the database, the hub (frames), the
    alerts, and for the kinds the room lookups and the accounts service. `draining`
    tells it that the server is shutting down, so new tasks are refused.
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        hub: FramePublisher,
        alerts: AlertSink,
        *,
        rooms: Rooms,
        accounts: AccountMaker,
        files: ContentReleaser,
        draining: Callable[[], bool] = lambda: False,
        queue: JobQueue | None = None,
        run_here: bool = True,
    ) -> None:
        """`queue`: the site's task queue (Redis). With `run_here` False, new tasks go
        there for `chat worker` processes; a worker's runner has both (`run_queued`)."""
        self.settings = settings
        self.queue = queue
        self.dispatch = queue is not None and not run_here
        self.alerts = alerts
        self.worker = worker_id()
        self.exports = ExportFiles.from_settings(settings)
        self.deps = TaskDeps(
            db, rooms, accounts, self.exports, files, settings.demo_max_seconds_user
        )
        self.repo = TaskRepository(db)
        self._draining = draining
        self._live: dict[str, LiveTask] = {}
        self._queue: deque[str] = deque()
        self._running: set[str] = set()
        self._stopping = False
        self.frames = TaskFrames(hub, self.repo, self._live, settings.task_progress_interval)
        self.liveness = Liveness(
            self.repo,
            self.frames,
            alerts,
            self.exports,
            worker=self.worker,
            heartbeat_interval=settings.task_heartbeat_interval,
            live=self._live,
            interrupt=self._interrupt,
            cancel_poll=WORKER_CANCEL_POLL if queue is not None and run_here else CANCEL_POLL,
            queue=queue,
        )

        # Where tasks run, the scheduled retention runs too (one process per interval).
        self.retention = (
            Retention(
                self.deps,
                alerts,
                days=settings.retention_days,
                interval=settings.retention_interval,
                holder=self.worker,
            )
            if settings.retention_days and not self.dispatch
            else None
        )

    @property
    def kinds(self) -> dict[str, TaskKind[Any]]:
        return REGISTRY

    # --- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Mark tasks orphaned by dead processes as failed, then start the watcher."""
        await self.liveness.start()
        if self.retention is not None:
            self.retention.start()

    async def stop(self) -> None:
        """Interrupt every local task: each is marked failed (interrupted) with an alert."""
        self._stopping = True
        self.frames.stopping = True
        await self.liveness.stop()
        if self.retention is not None:
            await self.retention.stop()
        queued = [live for live in self._live.values() if live.status == TaskStatus.QUEUED]
        running = [live.runner for live in self._live.values() if live.runner is not None]
        self._queue.clear()
        for live in queued:
            if self.queue is not None:  # a worker's: saq queues their jobs again
                self._live.pop(live.id, None)
                continue
            await self._finish(
                live, TaskStatus.FAILED, None, "interrupted: the server shut down before it ran"
            )
        for live in list(self._live.values()):
            self._interrupt(live, shutdown=True)
        if running:
            await asyncio.wait(running, timeout=STOP_WAIT)
        await self.frames.stop()

    # --- starting -----------------------------------------------------------------

    async def submit(
        self, kind_name: str, raw_params: Any, user: UserRef, *, source: str = "api"
    ) -> dict[str, Any]:
        """Validate, authorize and store a new task, queue it, and return its view.

        Raises `TaskRefused` (422 unknown kind or bad params, 403 admin-only kind,
        404 unreadable room, 429 too many active tasks, 503 shutting down).
        """
        if self._stopping or self._draining():
            raise TaskRefused(503, "the server is shutting down; try again shortly")
        kind, params = resolve(kind_name, raw_params, user)
        if user.role != "admin":
            active = await self.repo.count_active(user.id)
            if active >= self.settings.tasks_per_user:
                raise TaskRefused(
                    429,
                    f"you have {active} unfinished tasks; wait for one to finish or cancel one",
                )
        if kind.check is not None:
            await kind.check(self.deps, user, params)
        now = time.time()
        task_id = str(uuid.uuid4())
        owner = QUEUE_OWNER if self.dispatch else self.worker
        await self.repo.insert(task_id, kind.name, kind.stored_params(params), user.id, owner, now)
        live = LiveTask(task_id, kind, params, user, TaskStatus.QUEUED, now)
        log.info("task %s (%s) queued by user %s via %s", task_id, kind.name, user.id, source)
        if self.dispatch:
            await self._dispatch(live)
        else:
            self._live[task_id] = live
            await self.frames.emit(live)
            self._queue.append(task_id)
            self._pump()
        view = await self.view(task_id, user)
        assert view is not None
        return view

    async def _dispatch(self, live: LiveTask) -> None:
        """Send the queued frame, then hand the task to the site's queue (a worker runs
        it). Raises `TaskRefused` (503) when the queue does not take it."""
        assert self.queue is not None
        await self.frames.emit(live)
        try:
            await self.queue.push(live.id, live.params.model_dump(mode="json"))
        except Exception as exc:
            log.warning("could not queue task %s: %r", live.id, exc)
            await self._finish(live, TaskStatus.FAILED, None, "the task queue was unavailable")
            raise TaskRefused(503, "the task queue is unavailable; try again shortly") from None

    async def run_queued(self, task_id: str, raw_params: dict[str, Any]) -> None:
        """Run a task a worker got from the site's queue, as a local one (claim, run,
        final status); nothing when it was cancelled or swept before this."""
        if self._stopping:  # saq hands the job to another worker (or to this one, restarted)
            raise TaskRequeued("this worker is stopping")
        found = await self.repo.get(task_id)
        if found is None or found[0].status != TaskStatus.QUEUED:
            log.info("task %s: no longer queued; its job is dropped", task_id)
            return
        task, starter = found
        kind = REGISTRY.get(task.kind)
        try:
            if kind is None:  # a worker older than the process that queued it
                raise TaskFailed(f"this worker does not know the task kind {task.kind!r}")
            params = kind.params.model_validate(raw_params)
        except (TaskFailed, ValidationError) as exc:
            now = time.time()
            error = f"could not start: {exc}"[:MAX_ERROR]
            await self.repo.finish(
                task_id,
                TaskStatus.FAILED,
                progress=0.0,
                detail=None,
                error=error,
                result=None,
                now=now,
            )
            task.status, task.error, task.finished_at, task.updated_at = "failed", error, now, now
            await self.frames.publish_row(task, starter)
            await self.alerts.raise_alert(
                "error", f"task {task.kind} {task_id[:8]} failed: {error}"
            )
            return
        # Into this process's queue, as if submitted here: the same order (admins'
        # first) and the same rule (a user's tasks one at a time) among the jobs this
        # worker holds (saq hands it up to twice `task_concurrency`).
        live = LiveTask(
            task_id, kind, params, user_ref(starter), TaskStatus.QUEUED, task.created_at
        )
        self._live[task_id] = live
        self._queue.append(task_id)
        self._pump()
        try:
            await live.gone.wait()
        except asyncio.CancelledError:  # saq gave up the job (stopping): so do we
            if live.runner is None:  # not started: saq queues the job again
                with contextlib.suppress(ValueError):
                    self._queue.remove(task_id)
                self._live.pop(task_id, None)
            else:
                self._interrupt(live, shutdown=True)
            raise

    def _pump(self) -> None:
        while not self._stopping and len(self._running) < self.settings.task_concurrency:
            live = self._next_queued()
            if live is None:
                return
            self._queue.remove(live.id)
            self._running.add(live.id)
            live.runner = asyncio.create_task(self._run(live), name=f"task-{live.id}")

    def _next_queued(self) -> LiveTask | None:
        """The queued task to run next: admins' first, then the oldest.

        A non-admin runs at most one task at a time (in this process); their
        others wait, so one user cannot fill every slot and starve the rest.
        """
        busy = {
            live.user.id
            for task_id in self._running
            if (live := self._live.get(task_id)) is not None and live.user.role != "admin"
        }
        best: LiveTask | None = None
        for task_id in list(self._queue):
            live = self._live.get(task_id)
            if live is None or live.status != TaskStatus.QUEUED:
                self._queue.remove(task_id)
                continue
            if live.user.role != "admin" and live.user.id in busy:
                continue
            if best is None or live.queue_order() < best.queue_order():
                best = live
        return best

    # --- running ------------------------------------------------------------------

    async def _run(self, live: LiveTask) -> None:
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
                live.gone.set()
        finally:
            self._running.discard(live.id)
            self._pump()

    async def _claim(self, live: LiveTask) -> bool:
        now = time.time()
        if not await self.repo.claim(live.id, self.worker, now):
            return False
        live.status = TaskStatus.RUNNING
        live.started_at = now
        await self.frames.emit(live)
        return True

    async def _execute(self, live: LiveTask) -> None:
        ctx = TaskContext(live.id, live.user, self.frames.reporter(live), self.deps)
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
    def _cancelled(live: LiveTask) -> tuple[TaskStatus, None, str | None]:
        if live.interrupted:
            return TaskStatus.FAILED, None, "interrupted: the server shut down"
        return TaskStatus.CANCELLED, None, None

    def _interrupt(self, live: LiveTask, *, shutdown: bool = False) -> bool:
        """Cancel a local task's runner unless it is already finishing."""
        if live.runner is None or live.finishing or live.runner.done():
            return False
        live.interrupted = live.interrupted or shutdown
        live.runner.cancel()
        return True

    async def _finish(
        self,
        live: LiveTask,
        status: TaskStatus,
        result: dict[str, Any] | None,
        error: str | None,
    ) -> None:
        """Store the final status (retrying), send the final frame, alert on failure."""
        live.finishing = True
        self.frames.drop_held(live)
        now = time.time()
        error = error[:MAX_ERROR] if error else None
        progress = 1.0 if status == TaskStatus.SUCCEEDED else live.progress
        for attempt in range(5):
            try:
                await self.repo.finish(
                    live.id,
                    status,
                    progress=progress,
                    detail=live.detail,
                    error=error,
                    result=result,
                    now=now,
                )
                break
            except Exception as exc:
                log.warning("could not store the end of task %s: %r", live.id, exc)
                await asyncio.sleep(0.2 * 2**attempt)
        # Only now, with the row final, do readers see the final status.
        live.status, live.progress = status, progress
        self._live.pop(live.id, None)
        live.gone.set()
        await self.frames.emit(live, final_at=now, error=error)
        log.info(
            "task %s (%s) %s%s", live.id, live.kind.name, status, f": {error}" if error else ""
        )
        if status == TaskStatus.FAILED:
            await self.alerts.raise_alert(
                "error", f"task {live.kind.name} {live.id[:8]} failed: {error}"
            )

    # --- frames to sockets ----------------------------------------------------------

    async def greet(self, conn: Connection) -> None:
        """Right after `hello`: the state of every active task the connection may see."""
        await self.frames.greet(conn)

    async def resync(self, lost_at: float) -> None:
        """After a broker outage: re-send what changed since `lost_at` to local sockets."""
        await self.frames.resync(lost_at)

    def changed_somewhere(self) -> None:
        """A task frame went out from some process: the next greeting reads again."""
        self.frames.forget_greeting()

    async def sweep_orphans(self) -> int:
        """Mark active tasks of dead processes failed (interrupted); alert for each."""
        return await self.liveness.sweep_orphans()

    async def _until_final(self, task_id: str, timeout: float) -> None:
        """Wait (up to `timeout`) for another process to store the task's final status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = await self.row(task_id)
            if row is None or row.status in FINAL:
                return
            await asyncio.sleep(FINAL_POLL)

    # --- reading ------------------------------------------------------------------

    async def view(self, task_id: str, user: UserRef) -> dict[str, Any] | None:
        """A task as JSON, or None when absent or not the caller's (unless admin)."""
        row = await self.repo.get(task_id)
        if row is None:
            return None
        task, starter = row
        if user.role != "admin" and task.started_by != user.id:
            return None
        return task_json(task, starter, self._live.get(task.id))

    async def list_tasks(
        self, user: UserRef, *, active: bool = False, limit: int = 50, before: float | None = None
    ) -> list[dict[str, Any]]:
        """Newest first: every task for admins, the caller's own for others."""
        owner = None if user.role == "admin" else user.id
        rows = await self.repo.rows(owner, active=active, limit=limit, before=before)
        return [task_json(task, starter, self._live.get(task.id)) for task, starter in rows]

    async def row(self, task_id: str) -> Task | None:
        found = await self.repo.get(task_id)
        return found[0] if found else None

    # --- cancelling ---------------------------------------------------------------

    async def cancel(self, task_id: str, user: UserRef) -> dict[str, Any]:
        """Cancel a queued or running task (the starter's or, for admins, any).

        A local running task is waited for (up to a few seconds) so the answer
        usually shows `cancelled`; one running on another process is flagged and
        stops within about a second. Raises `TaskRefused` (404, or 409 when finished).
        """
        found = await self.repo.get(task_id)
        if found is None or (user.role != "admin" and found[0].started_by != user.id):
            raise TaskRefused(404, "no such task")
        task, starter = found
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
        elif task.status == TaskStatus.QUEUED and await self.repo.cancel_queued(
            task.id, time.time()
        ):  # queued on another process or on the site's queue: it never runs
            now = time.time()
            task.status, task.finished_at, task.updated_at = "cancelled", now, now
            await self.frames.publish_row(task, starter)
        else:  # running elsewhere (or claimed meanwhile): flag it, wait for it to stop
            await self.repo.request_cancel(task_id)
            await self._until_final(task_id, CANCEL_WAIT)
        view = await self.view(task_id, user)
        assert view is not None
        return view
