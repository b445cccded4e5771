"""Stream tickets kept in this process (one process: no Redis)."""

from __future__ import annotations

import time

from chat.backends.tickets import ticket_key

MAX_TICKETS = 100_000  # past this, expired ones are swept before another is kept


class MemoryTickets:
    def __init__(self) -> None:
        self._tickets: dict[str, tuple[str, float]] = {}  # key -> (value, expires)

    async def put(self, ticket: str, value: str, ttl: float) -> None:
        now = time.monotonic()
        if len(self._tickets) >= MAX_TICKETS:
            self._tickets = {k: v for k, v in self._tickets.items() if v[1] > now}
        self._tickets[ticket_key(ticket)] = (value, now + ttl)

    async def take(self, ticket: str) -> str | None:
        held = self._tickets.pop(ticket_key(ticket), None)
        if held is None or held[1] <= time.monotonic():
            return None
        return held[0]
