"""Gauges written every second by each process: what it holds (rooms, queues), and
every few seconds the task queue as the database sees it.

With several workers the process answering `/metrics` reads the others' values
from their files (`chat.monitoring.multiprocess`), so a gauge cannot be computed
when scraped (`set_function` only reaches the scraping process): each process
writes its own values here instead, at most `SAMPLE_INTERVAL` seconds old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import Gauge

from chat.monitoring import metrics

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 1.0  # seconds between samples of the process's own gauges
DATABASE_EVERY = 5  # samples between two reads of the task queue (one small query)

Local = Sequence[tuple[Gauge, Callable[[], float]]]
QueueStats = Callable[[float], Awaitable[tuple[int, float]]]


class MetricsSampler:
    """Sets `local` gauges from their functions, and the task queue gauges from `task_queue`."""

    def __init__(self, local: Local, task_queue: QueueStats) -> None:
        self._local = local
        self._task_queue = task_queue
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        metrics.PROCESSES.set(1)
        self._task = asyncio.create_task(self._run(), name="metrics-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        tick = 0
        while True:
            for gauge, read in self._local:
                gauge.set(read())
            if tick % DATABASE_EVERY == 0:
                await self._sample_task_queue()
            tick += 1
            await asyncio.sleep(SAMPLE_INTERVAL)

    async def _sample_task_queue(self) -> None:
        try:
            count, age = await self._task_queue(time.time())
        except Exception as exc:  # the database is down: /readyz and alerts say so
            log.debug("task queue sample failed: %r", exc)
            return
        metrics.TASK_QUEUE.set(count)
        metrics.TASK_QUEUE_AGE.set(age)
