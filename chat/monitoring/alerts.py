"""Alerts: stored in the `alerts` table and sent as `alert` frames to admin connections.

`Alerts.raise_alert(level, text)` is the one way in. Repeated-event alerts
(rate-limit closes of one user, authentication failures from one address) are
counted per process over a sliding window by `note_*`, which are synchronous so
the hot paths in `chat/ws/` and `api/auth.py` stay one-line calls; the alert
itself is raised in the background. `HealthWatcher` probes the database and the
broker and raises an alert when either becomes unreachable (and when it recovers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select

from chat.backends.repeats import Repeats, RepeatsFactory
from chat.hub import Hub
from chat.monitoring.abuse import AbuseEvent
from chat.protocol import AlertFrame, encode, iso
from chat.storage.db import Database
from chat.storage.models import Alert

log = logging.getLogger(__name__)

Level = Literal["info", "warning", "error", "critical"]
LEVELS: tuple[Level, ...] = ("info", "warning", "error", "critical")
MAX_TEXT = 2000
STORE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class AlertView:
    id: int | None
    level: Level
    text: str
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "level": self.level, "text": self.text, "ts": iso(self.created_at)}

    def frame(self) -> AlertFrame:
        return AlertFrame(level=self.level, text=self.text, ts=iso(self.created_at), id=self.id)


class Alerts:
    """Raise, store and list alerts."""

    def __init__(
        self,
        db: Database,
        hub: Hub,
        *,
        repeats: RepeatsFactory,
        window: float = 600.0,
        rate_limit_closes: int = 3,
        auth_failures: int = 10,
    ) -> None:
        self.db = db
        self.hub = hub
        # Counted for the whole site when CHAT_REDIS_URL is set (chat.backends).
        self._rate_limit_closes = repeats("rate_limit_closes", rate_limit_closes, window)
        self._auth_failures = repeats("auth_failures", auth_failures, window)
        self._window = window
        self._background: set[asyncio.Task[Any]] = set()

    async def raise_alert(self, level: Level, text: str) -> AlertView:
        """Store an alert and send it to every admin connection.

        Never raises: when the database is down the alert is still sent (with no
        id), and when the broker is down it is still stored and logged.
        """
        if level not in LEVELS:
            raise ValueError(f"unknown alert level {level!r}")
        text = text[:MAX_TEXT]
        now = time.time()
        alert_id: int | None = None
        log.log(logging.WARNING if level != "info" else logging.INFO, "alert %s: %s", level, text)
        try:
            alert_id = await asyncio.wait_for(self._store(level, text, now), STORE_TIMEOUT)
        except Exception as exc:  # the database may be the thing that is down
            log.warning("could not store the alert: %r", exc)
        view = AlertView(alert_id, level, text, now)
        try:
            await self.hub.publish_admins(encode(view.frame()))
        except Exception as exc:
            log.warning("could not publish the alert: %r", exc)
        return view

    async def _store(self, level: Level, text: str, now: float) -> int:
        async with self.db.write() as s:
            row = Alert(level=level, text=text, created_at=now)
            s.add(row)
            await s.flush()
            return row.id

    def raise_soon(self, level: Level, text: str) -> None:
        """`raise_alert` in the background (for synchronous callers)."""
        self.spawn(self.raise_alert(level, text))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def recent(self, limit: int = 50, before: int | None = None) -> list[AlertView]:
        """The newest alerts first; `before` (an id) pages back."""
        query = select(Alert).order_by(Alert.id.desc()).limit(limit)
        if before is not None:
            query = query.where(Alert.id < before)
        async with self.db.read() as s:
            rows = (await s.execute(query)).scalars().all()
        return [AlertView(r.id, r.level, r.text, r.created_at) for r in rows]  # type: ignore[arg-type]

    # --- repeated events (synchronous for the hot paths: counted in the background) ---

    def note_rate_limit_close(self, user_id: int, name: str) -> None:
        """A user's connection was closed for flooding; alert when it keeps happening."""
        text = (
            f"user {name} (id {user_id}) was closed for exceeding rate limits "
            f"{self._rate_limit_closes.threshold} times within {self._minutes}"
        )
        self.spawn(self._count(self._rate_limit_closes, f"user:{user_id}", text))

    def note_auth_failure(self, address: str | None, what: str = "authentication") -> None:
        """An authentication failure from `address`; alert when one address keeps failing."""
        key = address or "unknown"
        text = (
            f"{self._auth_failures.threshold} failed {what} attempts from {key} "
            f"within {self._minutes}"
        )
        self.spawn(self._count(self._auth_failures, key, text))

    async def _count(self, repeats: Repeats, key: str, text: str) -> None:
        if await repeats.hit(key):
            await self.raise_alert("warning", text)

    def on_abuse(self, event: AbuseEvent) -> None:
        """`AbuseMonitor` listener: counts the events that deserve an alert when repeated."""
        if event.kind == "rate_limit_close" and event.user_id is not None:
            self.note_rate_limit_close(event.user_id, event.username or "?")
        elif event.kind == "auth_failure":
            self.note_auth_failure(event.address)

    @property
    def _minutes(self) -> str:
        minutes = self._window / 60
        return f"{minutes:g} minute{'s' if minutes != 1 else ''}"

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


Probe = Callable[[], Awaitable[None]]


class HealthWatcher:
    """Probes dependencies every `interval` seconds; alerts on each up/down change."""

    def __init__(
        self, alerts: Alerts, probes: Mapping[str, Probe], interval: float, timeout: float = 5.0
    ) -> None:
        self.alerts = alerts
        self.probes = dict(probes)
        self.interval = interval
        self.timeout = timeout
        self.down: dict[str, str] = {}  # name -> why, while unreachable
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="health-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def check(self) -> None:
        """Probe everything once and raise alerts for changes."""
        for name, probe in self.probes.items():
            try:
                await asyncio.wait_for(probe(), self.timeout)
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__
                if name not in self.down:
                    self.down[name] = why
                    await self.alerts.raise_alert("critical", f"{name} unreachable: {why}")
            else:
                if self.down.pop(name, None) is not None:
                    await self.alerts.raise_alert("info", f"{name} reachable again")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # keep watching whatever happens
                log.exception("health check failed")
