"""What the hub needs from presence, whoever keeps it: this process or Redis.

`LocalPresenceStore` wraps the in-process `Presence` (the default: one
process). `chat.redis_presence.RedisPresence` keeps it in Redis, shared by
every worker and host, when `CHAT_REDIS_URL` is set. Both announce changes
through the same callback, `(room, "join" | "leave", user)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from chat.presence import Presence, PresenceCallback
from chat.protocol import UserRef

__all__ = ["LocalPresenceStore", "PresenceCallback", "PresenceFactory", "PresenceStore"]


class PresenceStore(Protocol):
    """Per-connection presence, merged per user, with a leave grace period."""

    async def start(self) -> None:
        """Begin background work (refreshing, sweeping)."""

    async def stop(self) -> None:
        """Stop background work and let go of this process's entries."""

    async def add(self, room: str, conn_id: int, user: UserRef) -> None:
        """Connection `conn_id` of `user` joined `room`; announce the user's first join."""

    async def remove(self, room: str, conn_id: int, user: UserRef) -> None:
        """Connection `conn_id` left `room`; the user's last one starts the grace period."""

    async def members(self, room: str) -> list[UserRef]:
        """Users present in `room`, by name (including those within their grace period)."""

    async def snapshot(self) -> dict[str, list[UserRef]]:
        """Every room with its present users."""


PresenceFactory = Callable[[PresenceCallback], PresenceStore]


class LocalPresenceStore:
    """`PresenceStore` over the in-process `Presence` (counts per user, not per connection)."""

    def __init__(self, presence: Presence) -> None:
        self.presence = presence

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.presence.flush()

    async def add(self, room: str, conn_id: int, user: UserRef) -> None:
        self.presence.add(room, user)

    async def remove(self, room: str, conn_id: int, user: UserRef) -> None:
        self.presence.remove(room, user)

    async def members(self, room: str) -> list[UserRef]:
        return self.presence.members(room)

    async def snapshot(self) -> dict[str, list[UserRef]]:
        return self.presence.snapshot()
