"""A graceful stop: the first SIGTERM or SIGINT drains the hub before uvicorn stops.

Draining refuses new sockets, lets each connection finish the frame in hand,
flushes what is queued and closes with 1001 (going away), so clients resume
elsewhere at once; then the signal goes on to uvicorn, which shuts down as usual.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from chat.protocol import CloseCode

if TYPE_CHECKING:
    from chat.services import Services

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5  # seconds uvicorn waits for leftovers after our drain
DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)

SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def install_drain_handlers(services: Services) -> Callable[[], None]:
    """Drain `services` on the first SIGTERM/SIGINT, then pass the signal on to uvicorn.

    Only installed from the main thread over a handler someone (uvicorn) set;
    a second signal goes straight through. Returns a function that restores
    the previous handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, SignalHandler] = {}
    tasks: set[asyncio.Task[None]] = set()

    def start(signum: int, frame: FrameType | None) -> None:
        task = loop.create_task(_drain_then_exit(services, signum, frame, previous))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def handler(signum: int, frame: FrameType | None) -> None:
        if services.draining:
            _chain(previous.get(signum), signum, frame)
            return
        services.draining = True
        # Signal handlers run between bytecodes: wake the loop up properly.
        loop.call_soon_threadsafe(start, signum, frame)

    for signum in DRAIN_SIGNALS:
        current = signal.getsignal(signum)
        if not callable(current) or current is signal.default_int_handler:
            continue  # nobody asked for a graceful stop: leave it alone
        previous[signum] = current
        signal.signal(signum, handler)

    def restore() -> None:
        for signum, old in previous.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, old)

    return restore


async def _drain_then_exit(
    services: Services, signum: int, frame: FrameType | None, previous: dict[int, SignalHandler]
) -> None:
    try:
        await drain(services, services.settings.drain_timeout)
    except Exception:
        log.exception("draining failed; shutting down anyway")
    finally:
        _chain(previous.get(signum), signum, frame)


def _chain(handler: SignalHandler, signum: int, frame: FrameType | None) -> None:
    if callable(handler):
        handler(signum, frame)


async def drain(services: Services, timeout: float) -> None:
    """Refuse new sockets, let each connection finish its frame, flush and close 1001."""
    started = time.monotonic()
    services.draining = True
    count = len(services.hub.connections)
    log.info("draining %d connection(s), at most %.1fs", count, timeout)
    left = await services.hub.drain(CloseCode.GOING_AWAY, "server shutting down", timeout)
    log.info(
        "drained in %.2fs%s",
        time.monotonic() - started,
        f"; {left} connection(s) left to close" if left else "",
    )
