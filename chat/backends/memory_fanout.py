"""Fan-out within one process: publish calls the hub's handler directly, in order."""

from __future__ import annotations

from collections.abc import Sequence

from chat.backends.fanout import Handler, Resubscribed


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

    @property
    def backlog(self) -> int:
        return 0  # publish delivers before it returns
