"""Direct-message rooms: one per pair of users, created once however concurrently asked.

A DM is a private room of kind `dm` whose `dm_key` is `"<low id>:<high id>"`
(unique), named `dm:<low id>:<high id>`: user-created room names may not start
with `dm:` (`chat.storage.rules.normalize_room_name`), so the two never collide.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from chat.protocol import UserRef
from chat.storage.models import Room, RoomMember
from chat.storage.records import RoomView
from chat.storage.rooms import RoomQueries
from chat.storage.rules import DM_PREFIX, Conflict


def dm_key(a: int, b: int) -> str:
    low, high = sorted((a, b))
    return f"{low}:{high}"


class DmQueries(RoomQueries):
    async def dm_name(self, a: int, b: int) -> str | None:
        """The name of the DM room of users `a` and `b`, if it exists."""
        async with self.db.read() as s:
            name = await s.scalar(select(Room.name).where(Room.dm_key == dm_key(a, b)))
        return name

    async def open_dm(self, caller: UserRef, peer_id: int) -> tuple[RoomView, bool]:
        """The DM room of `caller` and `peer_id`, and whether this call created it.

        Two racing requests (either side, any process) both try the insert; the
        unique `dm_key` lets one win, and the other reads the winner's room.
        """
        key = dm_key(caller.id, peer_id)
        created = False
        if await self.dm_name(caller.id, peer_id) is None:
            try:
                async with self.db.write() as s:
                    room = Room(
                        name=DM_PREFIX + key,
                        private=True,
                        owner_id=caller.id,
                        kind="dm",
                        dm_key=key,
                    )
                    s.add(room)
                    await s.flush()
                    s.add(RoomMember(room_id=room.id, user_id=caller.id))
                    s.add(RoomMember(room_id=room.id, user_id=peer_id))
                created = True
            except IntegrityError:
                pass  # the other side (or a retry) created it: read theirs
        name = await self.dm_name(caller.id, peer_id)
        view = await self.room_for(name, caller) if name is not None else None
        if view is None:  # only if a room of that name predates the reserved prefix
            raise Conflict("a room already uses this conversation's name")
        return view, created
