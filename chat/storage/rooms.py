"""Queries on rooms and their members: what a user may see, and each room's last seq."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import exists, func, or_, select
from sqlalchemy.exc import IntegrityError

from chat.protocol import UserRef
from chat.storage.db import Database
from chat.storage.models import Room, RoomMember, User
from chat.storage.records import RoomView, user_ref
from chat.storage.rules import Conflict


class RoomQueries:
    db: Database

    def _visible(self, user: UserRef) -> object:
        """SQL condition: the room is readable by `user` (public, member or admin)."""
        if user.role == "admin":
            return True
        return or_(
            Room.private.is_(False),
            exists().where(RoomMember.room_id == Room.id, RoomMember.user_id == user.id),
        )

    async def create_room(self, name: str, private: bool, owner: UserRef) -> RoomView:
        try:
            async with self.db.write() as s:
                room = Room(name=name, private=private, owner_id=owner.id)
                s.add(room)
                await s.flush()
                s.add(RoomMember(room_id=room.id, user_id=owner.id))
        except IntegrityError:
            raise Conflict("a room with that name exists") from None
        return RoomView(room.id, room.name, private, owner, 0, True, room.created_at)

    async def rooms_owned(self, user_id: int) -> int:
        async with self.db.read() as s:
            count = await s.scalar(select(func.count(Room.id)).where(Room.owner_id == user_id))
        return int(count or 0)

    async def room_for(self, name: str, user: UserRef) -> RoomView | None:
        """The room if `user` may read it; None both when absent and when forbidden."""
        views = await self._rooms(user, Room.name == name)
        return views[0] if views else None

    async def rooms_for(self, user: UserRef) -> list[RoomView]:
        return await self._rooms(user, None)

    async def _rooms(self, user: UserRef, where: object) -> list[RoomView]:
        member = (
            exists()
            .where(RoomMember.room_id == Room.id, RoomMember.user_id == user.id)
            .label("member")
        )
        query = (
            select(Room, User, member)
            .join(User, User.id == Room.owner_id)
            .where(self._visible(user))  # type: ignore[arg-type]
            .order_by(Room.name)
        )
        if where is not None:
            query = query.where(where)  # type: ignore[arg-type]
        async with self.db.read() as s:
            rows = (await s.execute(query)).all()
        return [
            RoomView(r.id, r.name, r.private, user_ref(o), r.last_seq, bool(m), r.created_at)
            for r, o, m in rows
        ]

    async def add_member(self, room_id: int, user_id: int) -> None:
        async with self.db.write() as s:
            if await s.get(RoomMember, (room_id, user_id)) is None:
                s.add(RoomMember(room_id=room_id, user_id=user_id))

    async def last_seq(self, room_id: int) -> int:
        async with self.db.read() as s:
            value = await s.scalar(select(Room.last_seq).where(Room.id == room_id))
            return int(value or 0)

    async def last_seqs(self, names: Sequence[str]) -> dict[str, int]:
        """The newest seq of each named room (rooms that do not exist are left out)."""
        async with self.db.read() as s:
            rows = await s.execute(select(Room.name, Room.last_seq).where(Room.name.in_(names)))
            return {name: int(seq) for name, seq in rows.tuples()}
