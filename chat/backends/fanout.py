"""Fan-out: publish/subscribe between hub processes (the `Broker` protocol).

The hub subscribes to a channel while it has a local listener for it and
publishes every outgoing event; each process then delivers to its own
connections. `memory_fanout.MemoryBroker` serves one process;
`redis_fanout.RedisBroker` serves many through Redis pub/sub. Revocations
(`user:<id>` channels) and task frames (`admins`) travel the same way.
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

    @property
    def backlog(self) -> int:
        """Publishes and received messages waiting in this process (a metric)."""
