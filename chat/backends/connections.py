"""Connections per user, counted across every process (the `ConnectionCounter` protocol).

`CHAT_MAX_CONNECTIONS_PER_USER` caps a user's open sockets. `memory_connections`
counts this process's; `redis_connections` counts the whole site's in Redis,
so the cap holds whichever workers and hosts the sockets land on.
"""

from __future__ import annotations

from typing import Protocol


class ConnectionCounter(Protocol):
    async def start(self) -> None:
        """Begin background work (refreshing this process's entries)."""

    async def stop(self) -> None:
        """Stop, and let go of this process's entries."""

    async def acquire(self, user_id: int, conn_id: int, cap: int) -> bool:
        """Count connection `conn_id` of the user, unless they already have `cap`."""

    async def release(self, user_id: int, conn_id: int) -> None:
        """Stop counting connection `conn_id` (idempotent)."""
