"""The delivery worker: each process sends the outbox's due deliveries in the background.

Nothing here runs on the chat's path: the writer only pokes the worker after a
batch that queued deliveries commits (`poke`). The worker claims due heads of
(webhook, room) queues (`WebhookRepository.claim`), sends each with a total
timeout, and records the outcome. A failure (not 2xx, timeout, connection error,
an address refused) is retried after `base * 2**(attempt-1)` seconds (at most
`webhook_backoff_max`); `webhook_max_failures` failures in a row disable the
webhook, with an alert. Its index of active webhooks is reloaded every
`webhook_refresh_interval` seconds (changes made on other processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import httpx

from chat import __version__
from chat.config import Settings
from chat.monitoring.alerts import Alerts
from chat.webhooks import addresses
from chat.webhooks.outbox import WebhookOutbox
from chat.webhooks.repository import Claimed, WebhookRepository
from chat_client.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)

log = logging.getLogger(__name__)

LEASE_SLACK = 30.0  # seconds a lease outlives a delivery's timeout
TRIM_INTERVAL = 60.0  # seconds between trims of the attempt log


class WebhookWorker:
    """Delivers this process's share of the outbox and keeps the index fresh."""

    def __init__(
        self,
        settings: Settings,
        repository: WebhookRepository,
        outbox: WebhookOutbox,
        alerts: Alerts,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.outbox = outbox
        self.alerts = alerts
        self.owner = f"{uuid.uuid4().hex[:12]}"  # this process, in leases
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._dropped_alerted: dict[int, float] = {}  # webhook id -> last alert time

    def start(self) -> None:
        self._client = httpx.AsyncClient(
            # No redirect is followed: a 3xx could point into the server's network.
            follow_redirects=False,
            trust_env=False,
            timeout=self.settings.webhook_timeout,
            headers={"User-Agent": f"chat-hub-webhooks/{__version__}"},
        )
        self._task = asyncio.create_task(self._run(), name="webhook-worker")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:  # what was in flight is sent again (at least once), without waiting
            await self.repository.release(self.owner)
        except Exception as exc:  # the database is gone: the leases expire instead
            log.warning("releasing webhook leases failed: %r", exc)
        if self._client is not None:
            await self._client.aclose()

    def poke(self) -> None:
        """Deliveries were queued here: look now rather than at the next poll."""
        self._wake.set()

    async def refresh(self) -> None:
        """Reload the index of active webhooks (after a change)."""
        self.outbox.load(await self.repository.active_hooks())
        self._wake.set()

    async def _run(self) -> None:
        s = self.settings
        next_refresh = next_trim = 0.0
        while True:
            now = time.monotonic()
            self._wake.clear()  # before the round: a poke during it is not lost
            try:
                if now >= next_refresh:
                    next_refresh = now + s.webhook_refresh_interval
                    await self.refresh()
                    await self._alert_dropped()
                if now >= next_trim:
                    next_trim = now + TRIM_INTERVAL
                    await self.repository.trim(s.webhook_attempts_kept)
                if self.outbox.active:
                    await self._claim_some()
            except Exception:  # the database may be down: keep trying
                log.exception("the webhook worker's round failed")
            wait = min(s.webhook_poll_interval, max(0.0, next_refresh - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _claim_some(self) -> None:
        free = self.settings.webhook_concurrency - len(self._inflight)
        if free <= 0:
            return
        lease = self.settings.webhook_timeout + LEASE_SLACK
        for claimed in await self.repository.claim(self.owner, lease, free):
            task = asyncio.create_task(self._deliver(claimed), name="webhook-delivery")
            self._inflight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # the room's next delivery may go now

    async def _deliver(self, c: Claimed) -> None:
        try:
            if c.event == "message" and not await self.repository.bot_can_read(c.bot_id, c.room_id):
                await self.repository.skipped(c, self.owner, "the bot cannot read the room")
                return
            started = time.perf_counter()
            status, error = await self._send(c)
            ms = round((time.perf_counter() - started) * 1000, 1)
            if error is None and status is not None:
                await self.repository.delivered(c, self.owner, status, ms)
                return
            s = self.settings
            retry_in = min(s.webhook_backoff_base * 2 ** (c.attempts - 1), s.webhook_backoff_max)
            disabled = await self.repository.failed(
                c,
                self.owner,
                status,
                error or "failed",
                ms,
                retry_in=retry_in,
                max_failures=s.webhook_max_failures,
            )
            if disabled:
                await self.refresh()
                await self.alerts.raise_alert(
                    "error",
                    f"webhook {c.webhook_id} disabled after {s.webhook_max_failures} failed "
                    f"deliveries in a row (last: {error}); its deliveries wait until it is "
                    "enabled again",
                )
        except Exception:  # recorded nothing: the lease expires and it is sent again
            log.exception("delivery %s of webhook %s failed", c.delivery_id, c.webhook_id)

    async def _send(self, c: Claimed) -> tuple[int | None, str | None]:
        """POST the delivery: (HTTP status, None) when 2xx, else (status or None, why)."""
        assert self._client is not None
        body = c.body.encode()
        try:
            async with asyncio.timeout(self.settings.webhook_timeout):
                target = await addresses.check(
                    c.url, allow_private=self.settings.webhooks_allow_private
                )
                headers = {
                    "Content-Type": "application/json",
                    "Host": target.host_header,
                    SIGNATURE_HEADER: sign(c.secret, body),
                    DELIVERY_HEADER: c.delivery_id,
                    TIMESTAMP_HEADER: str(int(time.time())),
                    EVENT_HEADER: c.event,
                }
                extensions: dict[str, Any] = {}
                if target.sni_hostname:
                    extensions["sni_hostname"] = target.sni_hostname
                request = self._client.build_request(
                    "POST", target.url, content=body, headers=headers, extensions=extensions
                )
                response = await self._client.send(request, stream=True)
                await response.aclose()  # the receiver's answer body is not ours to read
        except addresses.AddressRefused as exc:
            return None, exc.detail
        except TimeoutError:
            return None, f"no answer within {self.settings.webhook_timeout:g} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}"

    async def _alert_dropped(self) -> None:
        """One alert per webhook and alert window for events its full outbox refused."""
        now = time.monotonic()
        for hook_id, count in list(self.outbox.dropped.items()):
            last = self._dropped_alerted.get(hook_id)
            if last is not None and now - last < self.settings.alert_window:
                continue
            self._dropped_alerted[hook_id] = now
            del self.outbox.dropped[hook_id]
            await self.alerts.raise_alert(
                "warning",
                f"webhook {hook_id}: {count} events not queued, its outbox is full "
                f"({self.settings.webhook_outbox_max} deliveries waiting); see its deliveries",
            )
