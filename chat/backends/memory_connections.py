"""Connections per user, counted in this process."""

from __future__ import annotations

from collections import defaultdict


class MemoryConnections:
    def __init__(self) -> None:
        self._by_user: dict[int, set[int]] = defaultdict(set)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._by_user.clear()

    async def acquire(self, user_id: int, conn_id: int, cap: int) -> bool:
        # No await between the check and the add: the cap holds under a burst.
        conns = self._by_user[user_id]
        if conn_id not in conns and len(conns) >= cap:
            return False
        conns.add(conn_id)
        return True

    async def release(self, user_id: int, conn_id: int) -> None:
        conns = self._by_user.get(user_id)
        if conns is not None:
            conns.discard(conn_id)
            if not conns:
                del self._by_user[user_id]
