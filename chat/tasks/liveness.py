"""Liveness across processes: heartbeats, cancels made elsewhere, orphans, old exports.

A running process heartbeats its tasks (`heartbeat_at`, every
`task_heartbeat_interval`). A queued or running task whose heartbeat is older than
`STALE_AFTER` intervals belongs to a dead process: whichever live process notices
first (at its start-up, then every `STALE_AFTER` intervals) marks it `failed`
("interrupted: ...") and raises an alert. A cancel made on another process is
stored (`cancel_requested`) and picked up here within `CANCEL_POLL` seconds (a
`chat worker` looks more often: `cancel_poll`). With the site's queue (Redis), a task
waiting there is owned by no process; if its job is gone from the queue (Redis lost
it), it is marked failed (interrupted) and alerted like an orphan.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from chat.tasks.status import TaskStatus

if TYPE_CHECKING:
    from chat.storage.models import Task, User
    from chat.tasks.exports import ExportFiles
    from chat.tasks.frames import TaskFrames
    from chat.tasks.live import LiveTask
    from chat.tasks.ports import AlertSink, JobQueue
    from chat.tasks.repository import TaskRepository

log = logging.getLogger(__name__)

CANCEL_POLL = 1.0  # seconds between looks for cancels made on other processes
STALE_AFTER = 3  # heartbeat intervals without a beat before a task counts as orphaned
PRUNE_EVERY = 3600.0  # seconds between sweeps of old export files


class Liveness:
    """The watcher of one process's runner (one background loop)."""

    def __init__(
        self,
        repo: TaskRepository,
        frames: TaskFrames,
        alerts: AlertSink,
        exports: ExportFiles,
        *,
        worker: str,
        heartbeat_interval: float,
        live: Mapping[str, LiveTask],
        interrupt: Callable[[LiveTask], bool],
        cancel_poll: float = CANCEL_POLL,
        queue: JobQueue | None = None,
    ) -> None:
        self.repo = repo
        self.frames = frames
        self.alerts = alerts
        self.exports = exports
        self.worker = worker
        self.beat_every = heartbeat_interval
        self._live = live  # the runner's tasks
        self._interrupt = interrupt  # cancels a local task's run; False when too late
        self._watcher: asyncio.Task[None] | None = None
        self.cancel_poll = cancel_poll
        self.queue = queue  # the site's queue, whose lost jobs are swept too

    async def start(self) -> None:
        """Mark tasks orphaned by dead processes as failed, then start watching."""
        try:
            await self.sweep_orphans()
        except Exception:
            log.exception("could not sweep orphaned tasks at start-up")
        self._watcher = asyncio.create_task(self._watch(), name="task-watcher")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)

    async def _watch(self) -> None:
        """Heartbeat local tasks, pick up remote cancels, sweep orphans of dead processes."""
        poll_every = min(self.cancel_poll, self.beat_every)
        last_beat = last_sweep = time.monotonic()
        last_prune = -math.inf
        while True:
            await asyncio.sleep(poll_every)
            try:
                now = time.monotonic()
                await self._pick_up_cancels()
                if now - last_beat >= self.beat_every:
                    last_beat = now
                    await self._heartbeat()
                if now - last_sweep >= self.beat_every * STALE_AFTER:
                    last_sweep = now
                    await self.sweep_orphans()
                if now - last_prune >= PRUNE_EVERY:
                    last_prune = now
                    await asyncio.to_thread(self.exports.prune)
            except Exception:
                log.exception("task watcher iteration failed")

    async def _pick_up_cancels(self) -> None:
        running = [i for i, live in self._live.items() if live.status == TaskStatus.RUNNING]
        if not running:
            return
        for task_id in await self.repo.cancel_requested(running):
            live = self._live.get(task_id)
            if live is not None and self._interrupt(live):
                log.info("task %s: cancel requested on another process", task_id)

    async def _heartbeat(self) -> None:
        ids = list(self._live)
        if ids:
            await self.repo.heartbeat(ids)

    async def sweep_orphans(self) -> int:
        """Mark active tasks of dead processes failed (interrupted); alert for each."""
        cutoff = time.time() - self.beat_every * STALE_AFTER
        marked = 0
        for task, starter in await self.repo.orphans(self.worker, cutoff):
            was = task.status
            error = (
                "interrupted: the server running it stopped"
                if was == TaskStatus.RUNNING
                else "interrupted: the server it was queued on stopped"
            )
            why = f"was {was} when its server stopped"
            marked += await self._mark(task, starter, error, why)
        if self.queue is not None:
            waiting = {
                task.id: (task, starter) for task, starter in await self.repo.waiting(cutoff)
            }
            for task_id in await self.queue.lost(list(waiting)) if waiting else []:
                task, starter = waiting[task_id]
                error = "interrupted: its job was lost from the task queue"
                marked += await self._mark(task, starter, error, "was lost from the task queue")
        return marked

    async def _mark(self, task: Task, starter: User, error: str, why: str) -> int:
        """Mark one task failed (interrupted), tell the consoles, alert; 1 if done here."""
        now = time.time()
        if not await self.repo.mark_interrupted(task, error, now):
            return 0  # another process got there first
        task.status, task.error, task.finished_at, task.updated_at = "failed", error, now, now
        await self.frames.publish_row(task, starter)
        await self.alerts.raise_alert(
            "error",
            f"task {task.kind} {task.id[:8]} (started by {starter.username}) "
            f"{why}: marked failed (interrupted)",
        )
        return 1
