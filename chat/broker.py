"""Publish/subscribe between hub processes, chosen by URL.

The hub subscribes to a channel while it has a local listener for it and
publishes every outgoing event; each process then delivers to its own
connections. `MemoryBroker` serves one process; a Redis broker (`redis://`)
implements the same `Broker` protocol for many.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

Handler = Callable[[str, str], Awaitable[None] | None]
# Called with the wall-clock time the subscription was lost, once it is back.
Resubscribed = Callable[[float], None]


class BrokerUnavailable(ConnectionError):
    """The broker did not take a publish (Redis down, unreachable or too slow)."""


class Broker(Protocol):
    """What the hub needs from a message bus. Payloads are already-encoded text."""

    async def start(self, handler: Handler, on_resubscribed: Resubscribed | None = None) -> None:
        """Begin delivering messages of subscribed channels to `handler(channel, payload)`.

        `on_resubscribed(lost_at)` runs after the subscription came back from
        an outage: anything published in between was not delivered.
        """

    async def stop(self) -> None:
        """Stop delivering and release connections."""

    async def publish(self, channel: str, payload: str) -> None:
        """Send `payload` to every process subscribed to `channel`.

        Raises `BrokerUnavailable` when the message could not be handed over.
        """

    async def publish_many(self, items: Sequence[tuple[str, str]]) -> None:
        """Publish `(channel, payload)` pairs in order (one round trip where it can).

        Raises `BrokerUnavailable` when they could not all be handed over.
        """

    async def subscribe(self, channel: str) -> None:
        """Start receiving `channel` (idempotent)."""

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving `channel` (idempotent)."""

    async def ping(self) -> None:
        """Raise when the broker is unreachable."""


class MemoryBroker:
    """In-process broker: publish calls the handler directly, in order."""

    def __init__(self) -> None:
        self._handler: Handler | None = None
        self._channels: set[str] = set()

    async def start(self, handler: Handler, on_resubscribed: Resubscribed | None = None) -> None:
        self._handler = handler  # nothing is ever lost in process: no resubscription

    async def stop(self) -> None:
        self._handler = None
        self._channels.clear()

    async def publish(self, channel: str, payload: str) -> None:
        if self._handler is None or channel not in self._channels:
            return
        result = self._handler(channel, payload)
        if result is not None:
            await result

    async def publish_many(self, items: Sequence[tuple[str, str]]) -> None:
        for channel, payload in items:
            await self.publish(channel, payload)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def ping(self) -> None:
        return None


def create_broker(redis_url: str | None, prefix: str | None = None) -> Broker:
    """The broker for a URL: in-memory when unset, Redis for `redis://`/`rediss://`.

    `prefix` namespaces Redis channels and keys (default `chat:`).
    """
    if not redis_url:
        return MemoryBroker()
    from chat.redis_broker import DEFAULT_PREFIX, RedisBroker

    return RedisBroker(redis_url, prefix=prefix or DEFAULT_PREFIX)
