"""Stream tickets in Redis: minted on one process, good on any (`GETDEL`: once)."""

from __future__ import annotations

from redis.asyncio import Redis

from chat.backends.tickets import ticket_key


class RedisTickets:
    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._prefix = f"{prefix}ticket:"

    async def put(self, ticket: str, value: str, ttl: float) -> None:
        await self._client.set(self._prefix + ticket_key(ticket), value, px=max(1, int(ttl * 1000)))

    async def take(self, ticket: str) -> str | None:
        value = await self._client.getdel(self._prefix + ticket_key(ticket))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
