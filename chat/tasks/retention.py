"""Retention: a scheduled purge of old messages (their files too) and notifications.

Off unless `CHAT_RETENTION_DAYS` is set. Every `CHAT_RETENTION_INTERVAL` seconds each
process that runs tasks (the `chat worker`s with Redis, else the chat processes) asks
for the `retention` lease in the database (`chat.storage.leases`); the one that gets it
purges, so one process of the site does it per interval however many there are. It
purges room by room with the `purge` kind itself (batches of 500, each its own short
write, resting after each, files released with their messages), then notifications
older than the cutoff, in batches of 500 too. A failed run raises an alert; the next
one carries on where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import delete, select

from chat.protocol import UserRef
from chat.storage import leases
from chat.storage.models import Message, Notification, Room
from chat.tasks.context import TaskContext, TaskDeps
from chat.tasks.kinds.purge import PURGE_BATCH, PURGE_PAUSE, PurgeParams, purge
from chat.tasks.ports import AlertSink

log = logging.getLogger(__name__)

LEASE = "retention"
FIRST_RUN_DELAY = 1.0  # seconds after start-up before the first look
SYSTEM = UserRef(id=0, name="retention", role="admin")  # who a scheduled purge runs as


async def _quiet(done: float, total: float, detail: str | None = None) -> None:
    await asyncio.sleep(0)  # no frames: no one watches a scheduled job; a cancel point


class Retention:
    """The retention loop of one process (only where tasks run)."""

    def __init__(
        self, deps: TaskDeps, alerts: AlertSink, *, days: float, interval: float, holder: str
    ) -> None:
        self.deps = deps
        self.alerts = alerts
        self.days = days
        self.interval = interval
        self.holder = holder
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.create_task(self._forever(), name="retention")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)

    async def _forever(self) -> None:
        await asyncio.sleep(FIRST_RUN_DELAY)
        while True:
            try:
                # A little under one interval: this process may take it again next time.
                if await leases.take(self.deps.db, LEASE, self.holder, self.interval * 0.9):
                    await self.run_once()
            except Exception as exc:
                log.exception("retention run failed")
                await self.alerts.raise_alert("error", f"retention run failed: {exc!r}"[:500])
            await asyncio.sleep(self.interval)

    async def run_once(self) -> dict[str, Any]:
        """Purge what is older than the retention, room by room; what went."""
        began = time.monotonic()
        cutoff = time.time() - self.days * 86400
        db = self.deps.db
        async with db.read() as s:
            old = select(Message.room_id).where(Message.created_at < cutoff).distinct()
            rooms = (await s.scalars(select(Room.name).where(Room.id.in_(old)))).all()
        ctx = TaskContext(LEASE, SYSTEM, _quiet, self.deps)
        messages = 0
        for room in rooms:
            done = await purge(ctx, PurgeParams(older_than_days=self.days, room=room))
            messages += int(done["deleted"]) if done else 0
        notifications = await self._purge_notifications(cutoff)
        summary = {"rooms": len(rooms), "messages": messages, "notifications": notifications}
        log.info("retention (%g days): %s in %.1f s", self.days, summary, time.monotonic() - began)
        return summary

    async def _purge_notifications(self, cutoff: float) -> int:
        """Oldest first (ids grow with time), a batch per short write, resting between."""
        deleted = 0
        while True:
            began = time.perf_counter()
            async with self.deps.db.write() as s:
                ids = (
                    await s.scalars(
                        select(Notification.id)
                        .where(Notification.created_at < cutoff)
                        .order_by(Notification.id)
                        .limit(PURGE_BATCH)
                    )
                ).all()
                if ids:
                    await s.execute(delete(Notification).where(Notification.id.in_(ids)))
            if not ids:
                return deleted
            deleted += len(ids)
            await asyncio.sleep(max(PURGE_PAUSE, time.perf_counter() - began))
