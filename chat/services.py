"""The composition root: every part of a process, built once in the app's lifespan.

Each part is handed only what it uses (the hub its backends, the writer its
store, the task runner its ports, the WebSocket layer `WsDeps`, routes one
dependency per part); only the app, the graceful stop and the CLI import it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chat.api.stream import StreamDeps
from chat.auth.accounts import Accounts
from chat.auth.passwords import PasswordService
from chat.auth.tokens import TokenService, resolve_secret
from chat.backends import Backends, create_backends
from chat.config import Settings
from chat.files.service import FileService
from chat.hub import Hub
from chat.limits.buckets import FailureWindow, Gate, LoginThrottle
from chat.monitoring import metrics
from chat.monitoring.abuse import AbuseMonitor
from chat.monitoring.alerts import Alerts, HealthWatcher
from chat.monitoring.history import History
from chat.monitoring.sampler import MetricsSampler
from chat.protocol import encode
from chat.storage.db import Database
from chat.storage.memberships import MembershipRecorder
from chat.storage.records import Stored
from chat.storage.store import Store
from chat.storage.writer import MessageWriter
from chat.stream.cursor import CursorCodec, cursor_key
from chat.tasks import TaskRunner
from chat.tasks.repository import TaskRepository
from chat.webhooks.repository import WebhookRepository
from chat.webhooks.worker import WebhookWorker
from chat.ws.deps import WsDeps

if TYPE_CHECKING:
    from chat.tasks.queue import TaskQueue

log = logging.getLogger(__name__)
STOP_BUDGET = 8.0  # seconds for stopping every part, after the drain (at most 20 s)


@dataclass
class Services:
    settings: Settings
    db: Database
    store: Store
    accounts: Accounts
    backends: Backends
    hub: Hub
    abuse: AbuseMonitor = field(default_factory=AbuseMonitor)
    login_throttle: LoginThrottle = field(init=False)
    login_gate: Gate = field(init=False)
    registrations: FailureWindow = field(init=False)  # registration attempts per address
    room_creations: FailureWindow = field(init=False)  # rooms created per user
    alerts: Alerts = field(init=False)
    writer: MessageWriter = field(init=False)
    memberships: MembershipRecorder = field(init=False)  # public-room members, from joins
    tasks: TaskRunner = field(init=False)
    health: HealthWatcher = field(init=False)
    files: FileService = field(init=False)
    webhooks: WebhookWorker = field(init=False)
    sampler: MetricsSampler = field(init=False)
    history: History = field(init=False)  # the console's charts: the last hour
    draining: bool = False
    stream_key: bytes = b""  # signs stream cursors (`chat.stream.cursor`)
    worker: bool = False  # a `chat worker` (`chat.worker`): runs queued tasks, serves nothing
    task_queue: TaskQueue | None = field(init=False, default=None)  # the site's (Redis)

    def __post_init__(self) -> None:
        s = self.settings
        self.login_throttle = LoginThrottle(
            s.login_failures_per_account, s.login_failures_per_ip, s.login_failure_window
        )
        self.login_gate = Gate(s.hash_queue_max)
        self.registrations = FailureWindow(s.registrations_per_ip, s.registration_window)
        self.room_creations = FailureWindow(s.room_creations_per_user, s.room_creation_window)
        self.alerts = Alerts(
            self.db,
            self.hub,
            repeats=self.backends.repeats,
            window=s.alert_window,
            rate_limit_closes=s.alert_rate_limit_closes,
            auth_failures=s.alert_auth_failures,
        )
        self.abuse.subscribe(self.alerts.on_abuse)
        self.writer = MessageWriter(
            self.store,
            self._publish_stored,
            max_batch=s.write_batch_max,
            max_pending=s.write_queue_max,
        )
        self.memberships = MembershipRecorder(self.store, max_batch=s.write_batch_max)
        self.files = FileService.local(s, self.store)
        run_here = self.worker or s.tasks_here
        if s.redis_url and (self.worker or not run_here):
            from chat.tasks.queue import TaskQueue  # saq: only where tasks cross processes

            self.task_queue = TaskQueue(s.redis_url, s.redis_prefix, s.task_heartbeat_interval)
        self.tasks = TaskRunner(
            s,
            self.db,
            self.hub,
            self.alerts,
            rooms=self.store,
            accounts=self.accounts,
            files=self.files,
            draining=lambda: self.draining,
            queue=self.task_queue,
            run_here=run_here,
        )
        self.webhooks = WebhookWorker(s, WebhookRepository(self.db), self.store.outbox, self.alerts)
        self.hub.on_resync(self.tasks.resync)
        self.hub.on_admins_event(self.tasks.changed_somewhere)
        self.health = HealthWatcher(self.alerts, self.probes(), s.health_check_interval)
        # Named like the task runner's worker, so the health view can match the two.
        self.history = History(
            self.tasks.worker,
            lambda: len(self.hub.connections),
            self.backends.samples,
            s.stats_sample_interval,
        )
        fanout = self.backends.fanout
        local = [
            (metrics.ROOMS_ACTIVE, lambda: self.hub.rooms_active),
            (metrics.WRITE_QUEUE, lambda: self.writer.pending),
            (metrics.FANOUT_QUEUE, lambda: fanout.backlog),
        ]
        self.sampler = MetricsSampler(local, TaskRepository(self.db).queue_stats)

    def probes(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """What `/readyz`, the health alerts and the console's health view check."""
        return {"database": self.db.ping, "broker": self.backends.fanout.ping}

    @classmethod
    def build(cls, settings: Settings, *, worker: bool = False) -> Services:
        db = Database(settings.database_url)
        store = Store(
            db,
            webhook_outbox_max=settings.webhook_outbox_max,
            search_timeout=settings.search_timeout,
        )
        secret = resolve_secret(settings)
        tokens = TokenService(
            secret,
            settings.jwt_algorithm,
            settings.access_token_ttl,
            settings.refresh_token_ttl,
        )
        accounts = Accounts(
            store,
            tokens,
            PasswordService(
                settings.hash_concurrency,
                settings.password_hash_time_cost,
                settings.password_hash_memory_kib,
                settings.password_hash_parallelism,
            ),
        )
        backends = create_backends(settings)
        hub = Hub(
            backends.fanout,
            backends.presence,
            # The database: where missed changes are read back from (`changes_checked`).
            room_log=store,
            # Several processes publish to one room only through Redis: order by seq
            # and fill gaps from the database then.
            reorder=backends.kind == "redis",
            reorder_window=settings.reorder_window,
            gap_check_interval=settings.gap_check_interval,
            presence_tick=settings.presence_tick,
        )
        services = cls(settings, db, store, accounts, backends, hub, worker=worker)
        services.stream_key = cursor_key(secret)
        return services

    async def _publish_stored(self, stored: Sequence[Stored]) -> None:
        if self.store.outbox.active:  # deliveries may have been queued with the batch
            self.webhooks.poke()
        await self.hub.publish_messages(
            [(m.frame.room, m.frame.seq, encode(m.frame)) for m in stored]
        )
        for note in (n for m in stored for n in m.notifications):  # after the messages
            await self.hub.publish_user(note.user_id, encode(note.frame))

    async def start(self) -> None:
        await self.backends.connections.start()
        await self.hub.start()
        self.writer.start()
        self.memberships.start()
        if self.task_queue is not None:
            await self.task_queue.connect()
        await self.tasks.start()
        self.files.start()
        self.webhooks.start()
        self.health.start()
        self.history.start()
        self.sampler.start()

    async def stop(self) -> None:
        """Stop every part, each within what is left of `STOP_BUDGET`: SIGTERM must end
        the process within 30 s (the drain takes up to 20), so a part that hangs is left
        behind, and named in the log, rather than holding the exit."""
        deadline = time.monotonic() + STOP_BUDGET
        parts: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("sampler", self.sampler.stop),
            ("history", self.history.stop),
            ("health", self.health.stop),
            ("webhooks", self.webhooks.stop),
            ("files", self.files.stop),
            ("tasks", self.tasks.stop),
            ("writer", self.writer.stop),
            ("memberships", self.memberships.stop),
            ("shared parts", self._close_shared),
        ]
        for name, stop in parts:
            left = max(0.5, deadline - time.monotonic())
            try:
                await asyncio.wait_for(stop(), left)
            except TimeoutError:
                log.error("stopping the %s took over %.1f s: left behind", name, left)

    async def start_worker(self) -> None:
        """What a `chat worker` runs: the fan-out (frames and alerts reach every
        process's sockets through Redis) and the task runner; no sockets, no writer."""
        assert self.task_queue is not None, "a worker needs the site's queue (Redis)"
        await self.hub.start()
        await self.task_queue.connect()
        await self.tasks.start()

    async def stop_worker(self) -> None:
        """After the runner and the saq worker stopped (`chat.worker`): the rest."""
        await self._close_shared()

    async def _close_shared(self) -> None:
        if self.task_queue is not None:
            await self.task_queue.close()
        await self.alerts.stop()
        await self.hub.stop()
        await self.backends.connections.stop()
        await self.backends.close()
        await self.db.dispose()

    def stream_deps(self) -> StreamDeps:
        """The parts the event stream uses (`chat.api.stream`)."""
        return StreamDeps(self.ws_deps(), self.backends.tickets, CursorCodec(self.stream_key))

    def ws_deps(self) -> WsDeps:
        """The parts the WebSocket layer uses (`chat.ws.deps`)."""
        return WsDeps(
            settings=self.settings,
            hub=self.hub,
            store=self.store,
            accounts=self.accounts,
            writer=self.writer,
            files=self.files,
            memberships=self.memberships,
            connections=self.backends.connections,
            limits=self.backends.limits,
            abuse=self.abuse,
            greet=self.tasks.greet,
            draining=lambda: self.draining,
        )
