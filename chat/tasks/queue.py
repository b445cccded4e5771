"""The site's task queue: "run task <id>" from the chat process that accepted it to a
`chat worker`, on Redis, through saq (docs/tasks.md, "Workers", says why saq).

The `tasks` row stays the source of truth (status, progress, cancel, liveness); a
job only carries the task's id and its parameters (the row keeps a redacted copy of
some: an import's CSV). A job is keyed by the task id, so the same task is never
queued twice, and deleted once it ends (`ttl=-1`), parameters and all. A task runs at
most once whatever saq does (the row's claim is conditional): a task whose worker
died is marked interrupted by `Liveness`, and run again only by a person.

Imported only where `CHAT_REDIS_URL` is set, so a process without Redis never loads saq.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from saq import Queue, Worker
from saq.types import Context, PartialTimersDict

log = logging.getLogger(__name__)

JOB = "run_task"  # the one job function: run the task whose id it carries
SAQ_SWEEP = 60  # seconds between saq's sweeps of jobs whose worker stopped touching them

RunTask = Callable[[str, dict[str, Any]], Awaitable[None]]


class TaskQueue:
    """A saq queue named after the site's Redis prefix (several sites share a Redis)."""

    def __init__(self, redis_url: str, prefix: str, heartbeat_interval: float) -> None:
        self.saq = Queue.from_url(redis_url, name=f"{prefix}tasks")
        self.beat_every = heartbeat_interval
        # saq sweeps an active job (it is gone from its worker) untouched this long.
        self.job_heartbeat = max(2, math.ceil(heartbeat_interval * 6))

    async def connect(self) -> None:
        await self.saq.connect()

    async def close(self) -> None:
        await self.saq.disconnect()

    async def push(self, task_id: str, params: dict[str, Any]) -> None:
        """Queue "run `task_id`" for a worker. Raises when Redis does not take it."""
        await self.saq.enqueue(
            JOB,
            key=task_id,
            task_id=task_id,
            params=params,
            timeout=0,  # a task runs as long as it needs; cancels and liveness are ours
            # Tried again only when a stopping worker hands it back (`TaskRequeued`) or
            # saq sweeps a dead worker's job; the row's conditional claim runs it once.
            retries=2,
            ttl=-1,  # forgotten once done: the row has the result
            heartbeat=self.job_heartbeat,
        )

    async def lost(self, task_ids: Sequence[str]) -> list[str]:
        """Which of these tasks, queued on the site, have no job in the queue any more
        (Redis lost it: flushed, or restarted without persistence)."""
        jobs = await self.saq.jobs(task_ids)  # keyed by task id
        return [task_id for task_id, job in zip(task_ids, jobs, strict=True) if job is None]

    async def workers(self) -> int:
        """How many `chat worker` processes are taking this queue's jobs now."""
        info = await self.saq.info()
        return len(info.get("workers") or {})

    def worker(self, run: RunTask, concurrency: int, *, worker_id: str) -> Worker[Context]:
        """A saq worker that runs each job's task with `run(task_id, params)`, taking
        up to twice `concurrency` jobs (the runner runs `concurrency` at once).

        Signals are the caller's (`chat worker` interrupts its tasks first, so they
        end `interrupted`, not `cancelled`).
        """

        async def run_task(ctx: Context, *, task_id: str, params: dict[str, Any]) -> None:
            job = ctx.get("job")
            beat = asyncio.create_task(self._touch(job)) if job is not None else None
            try:
                await run(task_id, params)
            finally:
                if beat is not None:
                    beat.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await beat

        timers: PartialTimersDict = {
            "schedule": 1,
            "worker_info": 10,
            "sweep": SAQ_SWEEP,
            "abort": 1,
        }
        worker: Worker[Context] = Worker(
            self.saq,
            [(JOB, run_task)],
            id=worker_id,
            # Twice the runner's slots: the runner orders what it holds (admins first,
            # a user's tasks one at a time) and runs `concurrency` of them at once.
            concurrency=concurrency * 2,
            timers=timers,
        )
        worker.SIGNALS = []  # ours: see `chat.worker`
        return worker

    async def _touch(self, job: Any) -> None:
        """Tell saq the job's worker lives (else its sweep would abort the job)."""
        while True:
            await asyncio.sleep(self.beat_every)
            try:
                await job.update()
            except Exception as exc:  # Redis down: the task goes on; the row is the truth
                log.warning("could not touch the queue job of task %s: %r", job.key, exc)
