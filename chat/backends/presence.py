"""Presence: what the hub needs from it, whoever keeps it (the `PresenceStore` protocol).

`memory_presence.MemoryPresence` keeps it in this process (the default: one
process); `redis_presence.RedisPresence` keeps it in Redis, shared by every
worker and host, when `CHAT_REDIS_URL` is set. Both announce changes through
the same callback, `(room, "join" | "leave", user)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from chat.protocol import UserRef

# Called with (room, "join" | "leave", user) when presence really changes.
PresenceCallback = Callable[[str, str, UserRef], None]


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
