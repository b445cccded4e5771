"""Single-use stream tickets (the `Tickets` protocol), in this process or site-wide.

`EventSource` cannot send an `Authorization` header, so a browser first trades
its token for a ticket (`POST /api/stream/ticket`) and opens the stream with
`?ticket=`. A ticket is good once, for a few seconds. Only a hash of it is kept:
whoever reads Redis cannot use one.
"""

from __future__ import annotations

import hashlib
from typing import Protocol


class Tickets(Protocol):
    async def put(self, ticket: str, value: str, ttl: float) -> None:
        """Keep `value` under `ticket` for `ttl` seconds."""

    async def take(self, ticket: str) -> str | None:
        """The ticket's value, removed at once (single use); None if unknown or expired."""


def ticket_key(ticket: str) -> str:
    """What a ticket is stored under: its SHA-256 (the ticket itself is never kept)."""
    return hashlib.sha256(ticket.encode()).hexdigest()
