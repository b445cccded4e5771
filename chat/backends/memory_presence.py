"""Presence kept in this process: who is in which room, merged per user.

A user is present in a room while at least one of their connections has joined
it. When the last one leaves, the user stays listed for a short grace period,
so a quick reconnect neither announces a leave nor a second join.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from chat.backends.presence import PresenceCallback
from chat.protocol import UserRef


@dataclass
class _RoomPresence:
    users: dict[int, UserRef] = field(default_factory=dict)
    connections: dict[int, int] = field(default_factory=dict)  # user id -> count
    pending_leave: dict[int, asyncio.TimerHandle] = field(default_factory=dict)
    by_name: list[UserRef] | None = None  # `users` sorted, until they change


class Presence:
    """Per-process presence with a leave grace period."""

    def __init__(self, grace: float, on_change: PresenceCallback) -> None:
        self._grace = grace
        self._on_change = on_change
        self._rooms: dict[str, _RoomPresence] = {}

    def add(self, room: str, user: UserRef) -> None:
        """Count one more connection of `user` in `room`; announce a first join."""
        state = self._rooms.setdefault(room, _RoomPresence())
        count = state.connections.get(user.id, 0)
        state.connections[user.id] = count + 1
        if count:
            return
        timer = state.pending_leave.pop(user.id, None)
        if timer is not None:
            timer.cancel()  # came back within the grace period: nobody saw it leave
            return
        state.users[user.id] = user
        state.by_name = None
        self._on_change(room, "join", user)

    def remove(self, room: str, user: UserRef) -> None:
        """Count one connection fewer; the last one leaving starts the grace timer."""
        state = self._rooms.get(room)
        if state is None or user.id not in state.connections:
            return
        count = state.connections[user.id] - 1
        if count > 0:
            state.connections[user.id] = count
            return
        del state.connections[user.id]
        if self._grace <= 0:
            self._finish_leave(room, user.id)
            return
        loop = asyncio.get_running_loop()
        state.pending_leave[user.id] = loop.call_later(
            self._grace, self._finish_leave, room, user.id
        )

    def _finish_leave(self, room: str, user_id: int) -> None:
        state = self._rooms.get(room)
        if state is None:
            return
        state.pending_leave.pop(user_id, None)
        if user_id in state.connections:
            return
        user = state.users.pop(user_id, None)
        state.by_name = None
        if not state.users:
            del self._rooms[room]
        if user is not None:
            self._on_change(room, "leave", user)

    def members(self, room: str) -> list[UserRef]:
        """Users present in `room` (including those within their grace period)."""
        state = self._rooms.get(room)
        if state is None:
            return []
        if state.by_name is None:  # a join's snapshot: cached, so n joins cost O(n), not O(n²)
            state.by_name = sorted(state.users.values(), key=lambda u: u.name)
        return list(state.by_name)

    def rooms_of(self, user_id: int) -> list[str]:
        """Rooms where the user is present: for the admin console."""
        return [name for name, state in self._rooms.items() if user_id in state.users]

    def snapshot(self) -> dict[str, list[UserRef]]:
        """Every room with its present users."""
        return {name: self.members(name) for name in self._rooms}

    def flush(self) -> None:
        """Announce pending leaves now (used at shutdown)."""
        for room, state in list(self._rooms.items()):
            for user_id, timer in list(state.pending_leave.items()):
                timer.cancel()
                self._finish_leave(room, user_id)


class MemoryPresence:
    """`PresenceStore` over an in-process `Presence` (counts per user, not per connection)."""

    def __init__(self, grace: float, on_change: PresenceCallback) -> None:
        self.presence = Presence(grace, on_change)

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
