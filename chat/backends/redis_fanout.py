"""The Redis broker (`redis://`, `rediss://`): pub/sub shared by every worker and host.

Shape:
- Publishing goes through one connection. `publish` puts the message on a
  bounded outbox and waits; one writer task sends whatever is queued as a
  single pipeline, so a process's publishes reach Redis in call order and a
  burst costs one round trip.
- Receiving goes through one subscriber connection owned by a listener task.
  The listener hands each message to the handler inline (the hub's handler is
  synchronous and only queues frames), so it never waits on a socket. A
  handler that returns an awaitable has it run, in order, by a separate task.
- When the subscriber connection drops (Redis restarted, network cut, or no
  answer to a ping within 3 health intervals), the listener reconnects with
  jittered exponential backoff (0.1 s doubling up to 5 s) and subscribes
  again to every channel the hub still wants.

What is lost, and how it is recovered: Redis pub/sub keeps nothing for an
absent subscriber, so messages published while this process's listener is
reconnecting never reach it. They are in the database already: once
resubscribed, the listener calls `on_resubscribed(lost_at)` and the hub reads
back what its rooms missed (and re-sends task states changed since `lost_at`).
While Redis refuses publishes, `publish` raises `BrokerUnavailable` quickly
instead of queueing (the hub then delivers to its own process only).

Channels are namespaced with a prefix (`chat:` by default) because pub/sub
channels are shared by every database number of a Redis server.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from typing import Any

from prometheus_client import Counter, Histogram
from redis.asyncio.client import PubSub

from chat.backends.fanout import BrokerUnavailable, Handler, Resubscribed
from chat.backends.redis_client import (
    BACKOFF_CAP,
    CONNECT_TIMEOUT,
    DEFAULT_PREFIX,
    REDIS_DOWN,
    RedisConnection,
    backoff_delay,
    cancel_and_wait,
)

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 5.0  # an idle subscriber connection is pinged this often
SUBSCRIBE_TIMEOUT = 5.0  # longest wait for Redis to confirm a SUBSCRIBE
PUBLISH_FAIL_FAST = 1.0  # after a failed publish, refuse at once for this long
OUTBOX_SIZE = 10_000  # publishes queued for the writer before `publish` waits
BATCH_MAX = 500  # most publishes sent in one pipeline

RECONNECTS = Counter("chat_broker_reconnects_total", "Redis subscriber reconnections")
PUBLISH_FAILURES = Counter(
    "chat_broker_publish_failures_total", "Publishes Redis did not take (delivered locally only)"
)

BATCH_SIZES = Histogram(
    "chat_fanout_batch_size",
    "Publishes sent to Redis in one round trip",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
)

_Outgoing = tuple[str, str, "asyncio.Future[None]"]


class RedisBroker:
    """`Broker` over Redis pub/sub: one publish connection, one listener that reconnects."""

    def __init__(
        self,
        redis: RedisConnection,
        *,
        health_interval: float = HEALTH_INTERVAL,
        backoff_cap: float = BACKOFF_CAP,
        owns_connection: bool = False,
    ) -> None:
        self._redis = redis
        self._owns_connection = owns_connection
        self.prefix = redis.prefix
        self.client = redis.commands  # publishes and pings
        self._sub_client = redis.subscriber
        self._health_interval = health_interval
        self._backoff_cap = backoff_cap
        self._handler: Handler | None = None
        self._on_resubscribed: Resubscribed | None = None
        self._lost_at: float | None = None  # wall clock; set while disconnected
        self._unconfirmed = 0  # SUBSCRIBEs of a reconnect not yet confirmed
        self._channels: set[str] = set()  # wanted, without the prefix
        self._lock = asyncio.Lock()  # orders (re)subscription commands
        self._pubsub: PubSub | None = None  # set while the listener is connected
        self._confirm: dict[str, list[asyncio.Future[None]]] = defaultdict(list)
        self._server_channels = 0  # how many channels Redis says we hold
        self._last_seen = 0.0
        self._outbox: asyncio.Queue[_Outgoing] | None = None
        self._refuse_until = 0.0
        self._async_results: asyncio.Queue[Awaitable[None]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = asyncio.Event()
        self.reconnects = 0

    @classmethod
    def connect(cls, url: str, prefix: str = DEFAULT_PREFIX, **options: float) -> RedisBroker:
        """A broker on a connection of its own, closed by `stop` (tools and tests)."""
        return cls(RedisConnection(url, prefix), owns_connection=True, **options)

    # --- life -----------------------------------------------------------------

    async def start(self, handler: Handler, on_resubscribed: Resubscribed | None = None) -> None:
        """Start the writer and the listener; returns once subscribed or after one try.

        Never raises for an unreachable Redis: the listener keeps trying and
        `ping` reports the outage (so /readyz says not ready meanwhile).
        """
        if self._tasks:
            raise RuntimeError("RedisBroker.start called twice")
        self._handler = handler
        self._on_resubscribed = on_resubscribed
        self._outbox = asyncio.Queue(OUTBOX_SIZE)
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="redis-broker-writer"),
            asyncio.create_task(self._listen_loop(), name="redis-broker-listener"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), CONNECT_TIMEOUT + 0.5)

    async def stop(self) -> None:
        """Stop the tasks and fail queued publishes; close the connection if it is ours."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel_and_wait(task)
        if self._outbox is not None:
            while not self._outbox.empty():
                _, _, future = self._outbox.get_nowait()
                if not future.done():
                    future.set_exception(BrokerUnavailable("broker stopped"))
        self._release_waiters()
        self._handler = None
        self._channels.clear()
        if self._owns_connection:
            await self._redis.aclose()

    # --- Broker protocol ------------------------------------------------------

    async def publish(self, channel: str, payload: str) -> None:
        """Send `payload` to every process subscribed to `channel`.

        Waits until Redis has taken it. Raises `BrokerUnavailable` when Redis
        refuses or cannot be reached (at once, for a second after a failure).
        """
        await self.publish_many([(channel, payload)])

    async def publish_many(self, items: Sequence[tuple[str, str]]) -> None:
        """`publish` for several, in order: queued together, so usually one pipeline."""
        if self._outbox is None or not self._tasks:
            raise BrokerUnavailable("broker not started")
        if time.monotonic() < self._refuse_until:
            raise BrokerUnavailable("redis unavailable (recent publish failed)")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for channel, payload in items:
            future: asyncio.Future[None] = loop.create_future()
            await self._outbox.put((self.prefix + channel, payload, future))
            futures.append(future)
        try:
            for future in futures:
                await future
        finally:  # retrieve every outcome: a refused batch fails each future alike
            for future in futures:
                if future.done() and not future.cancelled():
                    future.exception()

    async def subscribe(self, channel: str) -> None:
        """Receive `channel` from now on; returns once Redis confirmed it.

        When the listener is reconnecting, the channel is remembered and
        subscribed on reconnect; this returns at once (nothing can be received
        meanwhile anyway).
        """
        async with self._lock:
            waiters = self._confirm.get(self.prefix + channel)
            if channel in self._channels:
                # A subscribe in flight: wait for its confirmation too.
                waiter = waiters[-1] if waiters else None
            else:
                self._channels.add(channel)
                waiter = await self._send_subscribe(channel)
        if waiter is not None:
            try:
                await asyncio.wait_for(asyncio.shield(waiter), SUBSCRIBE_TIMEOUT)
            except TimeoutError:
                log.warning("redis did not confirm SUBSCRIBE %s in time", channel)

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving `channel` (idempotent)."""
        async with self._lock:
            if channel not in self._channels:
                return
            self._channels.discard(channel)
            pubsub = self._pubsub
            if pubsub is not None:
                try:
                    await pubsub.unsubscribe(self.prefix + channel)
                except REDIS_DOWN as exc:  # the listener notices and reconnects
                    log.debug("UNSUBSCRIBE %s failed: %r", channel, exc)

    @property
    def backlog(self) -> int:
        """Publishes not yet sent plus received messages whose async handling waits."""
        queues = (self._outbox, self._async_results)
        return sum(queue.qsize() for queue in queues if queue is not None)

    async def ping(self) -> None:
        """Raise `BrokerUnavailable` unless Redis answers and the listener is subscribed."""
        try:
            await asyncio.wait_for(self.client.ping(), CONNECT_TIMEOUT + 0.5)
        except REDIS_DOWN as exc:
            raise BrokerUnavailable(f"redis unreachable: {type(exc).__name__}") from exc
        if not self.connected.is_set():
            raise BrokerUnavailable("redis subscriber reconnecting")

    @property
    def channels(self) -> frozenset[str]:
        """The channels this process wants (for tests and the admin view)."""
        return frozenset(self._channels)

    # --- publishing -----------------------------------------------------------

    async def _write_loop(self) -> None:
        assert self._outbox is not None
        outbox = self._outbox
        while True:
            batch = [await outbox.get()]
            while len(batch) < BATCH_MAX and not outbox.empty():
                batch.append(outbox.get_nowait())
            live = [item for item in batch if not item[2].done()]  # callers may have gone
            if not live:
                continue
            BATCH_SIZES.observe(len(live))
            try:
                if len(live) == 1:  # the common case when idle: skip the pipeline's overhead
                    await self.client.publish(live[0][0], live[0][1])
                else:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for channel, payload, _ in live:
                            pipe.publish(channel, payload)
                        await pipe.execute()
            except REDIS_DOWN as exc:
                self._refuse_until = time.monotonic() + PUBLISH_FAIL_FAST
                PUBLISH_FAILURES.inc(len(live))
                log.warning("redis publish failed (%d messages): %r", len(live), exc)
                error = BrokerUnavailable(f"redis publish failed: {type(exc).__name__}")
                for _, _, future in live:
                    if not future.done():
                        future.set_exception(error)
                continue
            except BaseException:  # cancelled by `stop`: nobody must wait for these forever
                for _, _, future in live:
                    if not future.done():
                        future.set_exception(BrokerUnavailable("broker stopped"))
                raise
            for _, _, future in live:
                if not future.done():
                    future.set_result(None)

    # --- receiving ------------------------------------------------------------

    async def _send_subscribe(self, channel: str) -> asyncio.Future[None] | None:
        """SUBSCRIBE on the live connection (lock held); the confirmation's future."""
        pubsub = self._pubsub
        if pubsub is None:
            return None
        full = self.prefix + channel
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirm[full].append(waiter)
        try:
            await pubsub.subscribe(full)
        except REDIS_DOWN as exc:  # the listener notices and resubscribes everything
            log.debug("SUBSCRIBE %s failed: %r", channel, exc)
            self._confirm[full].remove(waiter)
            if not self._confirm[full]:
                del self._confirm[full]
            return None
        return waiter

    async def _listen_loop(self) -> None:
        attempt = 0
        while True:
            pubsub = self._sub_client.pubsub()
            started = time.monotonic()
            try:
                await self._connect(pubsub)
                if attempt:
                    self._refuse_until = 0.0  # Redis is back: publish again at once
                    self.reconnects += 1
                    RECONNECTS.inc()
                    log.info("redis subscriber reconnected after %d attempt(s)", attempt)
                await self._read(pubsub)
            except REDIS_DOWN as exc:
                level = logging.WARNING if attempt == 0 else logging.DEBUG
                log.log(level, "redis subscriber connection lost: %r", exc)
            except Exception:  # a bug, or redis-py surprising us: never stop listening
                log.exception("redis subscriber failed; reconnecting")
            finally:
                await self._disconnect(pubsub)
            if time.monotonic() - started > self._backoff_cap * 2:
                attempt = 0  # it had been up a while: start the backoff over
            delay = backoff_delay(attempt, cap=self._backoff_cap)
            attempt += 1
            await asyncio.sleep(delay)

    async def _connect(self, pubsub: PubSub) -> None:
        async with self._lock:
            await pubsub.connect()  # type: ignore[no-untyped-call]
            wanted = sorted(self.prefix + c for c in self._channels)
            self._unconfirmed = len(wanted)
            if wanted:
                await pubsub.subscribe(*wanted)  # `connected` once Redis confirmed them all
            else:
                self._resubscribed()
            self._pubsub = pubsub
            self._last_seen = time.monotonic()

    def _resubscribed(self) -> None:
        """Every channel is subscribed (again): ready; tell the hub what it may have missed."""
        self.connected.set()
        lost_at, self._lost_at = self._lost_at, None
        if lost_at is not None and self._on_resubscribed is not None:
            try:
                self._on_resubscribed(lost_at)
            except Exception:
                log.exception("on_resubscribed failed")

    async def _disconnect(self, pubsub: PubSub) -> None:
        if self._lost_at is None:
            self._lost_at = time.time()
        self.connected.clear()
        self._pubsub = None
        self._server_channels = 0
        self._release_waiters()
        with contextlib.suppress(Exception):  # best effort: the socket may be gone
            await asyncio.wait_for(pubsub.aclose(), CONNECT_TIMEOUT)  # type: ignore[no-untyped-call]

    async def _read(self, pubsub: PubSub) -> None:
        interval = self._health_interval
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=interval)
            now = time.monotonic()
            if message is not None:
                self._last_seen = now
                pinged = False
                self._on_message(message)
                continue
            idle = now - self._last_seen
            if idle >= 3 * interval:
                raise TimeoutError(f"no answer from redis for {idle:.1f}s")
            if idle >= interval and not pinged and self._server_channels:
                # Subscribed connections answer PING with a pong message.
                async with self._lock:
                    await pubsub.ping()
                pinged = True

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            channel = str(message["channel"])
            if channel.startswith(self.prefix):
                self._deliver(channel[len(self.prefix) :], str(message["data"]))
        elif kind in ("subscribe", "unsubscribe"):
            self._server_channels = int(message["data"])
            if kind == "subscribe" and self._unconfirmed:
                # Redis answers in order: the reconnect's own SUBSCRIBEs come first.
                self._unconfirmed -= 1
                if not self._unconfirmed:
                    self._resubscribed()
            if kind == "subscribe":
                channel = str(message["channel"])
                waiters = self._confirm.get(channel)
                if waiters:
                    waiter = waiters.pop(0)
                    if not waiters:
                        del self._confirm[channel]
                    if not waiter.done():
                        waiter.set_result(None)

    def _deliver(self, channel: str, payload: str) -> None:
        handler = self._handler
        if handler is None:
            return
        try:
            result = handler(channel, payload)
        except Exception:
            log.exception("broker handler failed for %s", channel)
            return
        if result is not None:
            self._run_later(result)

    def _run_later(self, awaitable: Awaitable[None]) -> None:
        """Queue an async handler's work for the ordered runner (started on first use)."""
        if self._async_results is None:
            self._async_results = asyncio.Queue(OUTBOX_SIZE)
            self._tasks.append(asyncio.create_task(self._run_results(), name="redis-broker-runner"))
        try:
            self._async_results.put_nowait(awaitable)
        except asyncio.QueueFull:
            log.error("async broker handler is too slow: dropping a message")
            if inspect.iscoroutine(awaitable):
                awaitable.close()

    async def _run_results(self) -> None:
        assert self._async_results is not None
        while True:
            awaitable = await self._async_results.get()
            try:
                await awaitable
            except Exception:
                log.exception("async broker handler failed")

    def _release_waiters(self) -> None:
        for waiters in self._confirm.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._confirm.clear()
