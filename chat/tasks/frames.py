"""Task frames: to every admin and to the starter, progress throttled, the final one last.

Progress frames are throttled to one per `task_progress_interval` per task (the newest
value is sent when the interval ends) and written to the row at most once a second;
status changes are sent at once; the final status is sent last, after which nothing
else is sent for the task. A final frame the broker refused is published again (the
frame is the whole state, so a repeat is harmless; a lost final is not). New sockets
are greeted with the active tasks, and after a broker outage this process's sockets
get again what may have been lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from chat.protocol import UserRef, encode
from chat.storage.records import user_ref
from chat.storage.ttl_cache import TTLCache
from chat.tasks.status import TaskStatus
from chat.tasks.views import live_frame, row_frame

if TYPE_CHECKING:
    from chat.hub import Connection
    from chat.protocol import TaskFrame
    from chat.storage.models import Task, User
    from chat.tasks.context import Progress
    from chat.tasks.live import LiveTask
    from chat.tasks.ports import FramePublisher
    from chat.tasks.repository import TaskRepository

log = logging.getLogger(__name__)

MAX_DETAIL = 500
SAVE_INTERVAL = 1.0  # seconds between progress writes to the database per task
GREETING_CACHE_SECONDS = 1.0  # how long new sockets share one read of the active tasks
FINAL_FRAME_RETRIES = 60  # a refused final task frame is published again this often,
FINAL_FRAME_RETRY_DELAY = 1.0  # this many seconds apart


class TaskFrames:
    """Sends the `task` frames of one process's runner."""

    def __init__(
        self,
        hub: FramePublisher,
        repo: TaskRepository,
        live: Mapping[str, LiveTask],
        progress_interval: float,
    ) -> None:
        self.hub = hub
        self.repo = repo
        self._live = live  # the runner's tasks, fresher than their rows
        self._interval = progress_interval
        self._background: set[asyncio.Task[Any]] = set()
        self.stopping = False  # set at shutdown: no more republishing
        # Every active task, shared by the greetings of a burst of new sockets.
        self._active_cache: TTLCache[None, Sequence[tuple[Task, User]]] = TTLCache(
            GREETING_CACHE_SECONDS, 1
        )

    async def stop(self) -> None:
        """Drop held progress frames and republishing in flight."""
        self.stopping = True
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # --- a task this process runs ---------------------------------------------------

    def reporter(self, live: LiveTask) -> Progress:
        """The `progress` a running kind calls: throttled frames, occasional row writes."""

        async def progress(done: float, total: float, detail: str | None = None) -> None:
            fraction = done / total if total > 0 else 0.0
            live.progress = max(0.0, min(1.0, fraction))
            live.detail = detail[:MAX_DETAIL] if detail else None
            now = time.monotonic()
            due = live.sent_at + self._interval
            if now >= due:
                self.drop_held(live)
                await self.emit(live)
            elif live.trailing is None:
                live.trailing = asyncio.get_running_loop().call_later(
                    due - now, self._send_trailing, live
                )
            if now - live.saved_at >= SAVE_INTERVAL:
                live.saved_at = now
                await self._save_progress(live)
            await asyncio.sleep(0)  # a cancellation point even in a busy loop

        return progress

    @staticmethod
    def drop_held(live: LiveTask) -> None:
        """Forget a progress frame held back by the throttle."""
        if live.trailing is not None:
            live.trailing.cancel()
            live.trailing = None

    def _send_trailing(self, live: LiveTask) -> None:
        live.trailing = None
        if live.status == TaskStatus.RUNNING and not live.final_sent:
            self._spawn(self.emit(live))

    async def _save_progress(self, live: LiveTask) -> None:
        try:
            await self.repo.save_progress(live.id, live.progress, live.detail)
        except Exception as exc:  # progress is advisory; the final write matters
            log.warning("could not save the progress of task %s: %r", live.id, exc)

    async def emit(
        self, live: LiveTask, *, final_at: float | None = None, error: str | None = None
    ) -> None:
        """Send the task's current state; after the final frame nothing more is sent."""
        async with live.lock:
            if live.final_sent:
                return
            if final_at is not None:
                live.final_sent = True
            live.sent_at = time.monotonic()
            frame = live_frame(live, final_at=final_at, error=error)
            await self.publish(live.user, encode(frame), final=final_at is not None)

    # --- any task -----------------------------------------------------------------

    def forget_greeting(self) -> None:
        self._active_cache.clear()

    async def publish_row(self, task: Task, starter: User) -> None:
        """Send a stored task's state (changed in the database, not by a local run)."""
        await self.publish(user_ref(starter), encode(self._row_frame(task, starter)))

    async def publish(self, starter: UserRef, payload: str, *, final: bool = True) -> None:
        """To every admin and the starter. A final frame the broker refused is tried
        again (the state is whole, so a repeat is harmless; a lost final is not)."""
        self._active_cache.clear()  # a task changed: the next greeting reads again
        try:
            published = await self.hub.publish_admins(payload)
            if starter.role != "admin":  # admins get it once, through `admins`
                published = await self.hub.publish_user(starter.id, payload) and published
        except Exception as exc:
            log.warning("could not publish a task frame: %r", exc)
            published = False
        if final and not published and not self.stopping:
            self._spawn(self._republish(starter, payload))

    async def _republish(self, starter: UserRef, payload: str) -> None:
        for _ in range(FINAL_FRAME_RETRIES):
            await asyncio.sleep(FINAL_FRAME_RETRY_DELAY)
            if await self.hub.publish_admins(payload) and (
                starter.role == "admin" or await self.hub.publish_user(starter.id, payload)
            ):
                return
        log.warning("gave up publishing a final task frame")

    # --- sockets that need the present state ------------------------------------------

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
                conn.push(encode(self._row_frame(task, starter)))

    async def _active_rows(self) -> Sequence[tuple[Task, User]]:
        """Every active task, read at most once per `GREETING_CACHE_SECONDS`.

        A burst of connections would otherwise read the same rows once each.
        Any task frame, from this process or another (`forget_greeting`, on the
        `admins` channel), drops the copy at once.
        """
        return await self._active_cache.get(
            None, partial(self.repo.rows, None, active=True, limit=200)
        )

    async def resync(self, lost_at: float) -> None:
        """After a broker outage: re-send, to this process's connections, every task
        that is active or changed since `lost_at` (frames carry whole states, so a
        repeat is harmless; a missed final frame is not)."""
        rows = await self.repo.rows(None, active=True, limit=200, changed_since=lost_at - 1.0)
        for task, starter in reversed(rows):
            payload = encode(self._row_frame(task, starter))
            for conn in list(self.hub.connections):
                if conn.user.role == "admin" or conn.user.id == starter.id:
                    conn.push(payload)

    def _row_frame(self, task: Task, starter: User) -> TaskFrame:
        return row_frame(task, starter, self._live.get(task.id))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
