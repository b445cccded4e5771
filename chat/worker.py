"""`chat worker`: a process that runs tasks and nothing else (docs/tasks.md, "Workers").

It takes "run task <id>" jobs from the site's queue (saq on Redis), runs each with the
same runner as a chat process (`TaskRunner.run_queued`), and publishes its frames and
alerts through the fan-out, so every chat process's admins and starters see them. It
heartbeats its tasks in the database like a chat process; one killed with `kill -9`
leaves tasks that any other process marks failed (interrupted), with an alert.

On SIGTERM or SIGINT it first interrupts its running tasks (each ends failed,
`interrupted: the server shut down`, with an alert, as in a chat process), then stops
taking jobs: one taken meanwhile goes back to the queue for another worker.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from chat.config import Settings

log = logging.getLogger(__name__)


async def run_worker(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT. Raises `ValueError` without `CHAT_REDIS_URL`."""
    if not settings.redis_url:
        raise ValueError("chat worker needs CHAT_REDIS_URL: tasks reach workers through Redis")
    from chat.services import Services

    services = Services.build(settings, worker=True)
    assert services.task_queue is not None
    await services.start_worker()
    saq = services.task_queue.worker(
        services.tasks.run_queued, settings.task_concurrency, worker_id=services.tasks.worker
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    taking = asyncio.create_task(saq.start(), name="saq-worker")
    log.info(
        "task worker %s ready (%d at once, queue %s)",
        services.tasks.worker,
        settings.task_concurrency,
        services.task_queue.saq.name,
    )
    try:
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({taking, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if taking.done() and not taking.cancelled() and taking.exception() is not None:
            log.error("the queue worker stopped: %r", taking.exception())
    finally:
        log.info("task worker stopping")
        await services.tasks.stop()  # first: running tasks end interrupted, not cancelled
        await saq.stop()
        taking.cancel()
        await asyncio.gather(taking, return_exceptions=True)
        await services.stop_worker()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
