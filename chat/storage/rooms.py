"""Queries on rooms and their members: what a user may see, and each room's last seq."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat.protocol import UserRef
from chat.storage.db import Database
from chat.storage.messages import value_rows
from chat.storage.models import Room, RoomMember, User
from chat.storage.records import RoomView, user_ref
from chat.storage.rules import Conflict

MEMBERS_PAGE_MAX = 500  # members listed per request


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
                room = Room(name=name, private=private, owner_id=owner.id, kind="room")
                s.add(room)
                await s.flush()
                s.add(RoomMember(room_id=room.id, user_id=owner.id))
        except IntegrityError:
            raise Conflict("a room with that name exists") from None
        return RoomView(room.id, room.name, private, owner, 0, True, room.created_at)

    async def rooms_owned(self, user_id: int) -> int:
        """Rooms (not DMs) the user owns."""
        query = select(func.count(Room.id)).where(Room.owner_id == user_id, Room.kind == "room")
        async with self.db.read() as s:
            count = await s.scalar(query)
        return int(count or 0)

    async def room_for(self, name: str, user: UserRef) -> RoomView | None:
        """The room if `user` may read it; None both when absent and when forbidden."""
        if "\x00" in name:  # no room name holds NUL, and PostgreSQL cannot bind one
            return None
        views = await self._rooms(user, Room.name == name)
        return views[0] if views else None

    async def rooms_for(self, user: UserRef) -> list[RoomView]:
        """The user's room list: every room they can read, except other people's DMs
        (an admin can read those, but they are not theirs to list)."""
        mine = exists().where(RoomMember.room_id == Room.id, RoomMember.user_id == user.id)
        return await self._rooms(user, or_(Room.kind != "dm", mine))

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
            .where(where)  # type: ignore[arg-type]
            .order_by(Room.name)
        )
        async with self.db.read() as s:
            rows = (await s.execute(query)).all()
            dms = [r.id for r, _, m in rows if r.kind == "dm" and m]
            peers = await self._peers(s, dms, user.id) if dms else {}
        return [
            RoomView(
                r.id,
                r.name,
                r.private,
                user_ref(o),
                r.last_seq,
                bool(m),
                r.created_at,
                kind=r.kind,
                topic=r.topic,
                archived=bool(r.archived),
                peer=peers.get(r.id),
            )
            for r, o, m in rows
        ]

    @staticmethod
    async def _peers(s: AsyncSession, room_ids: list[int], user_id: int) -> dict[int, UserRef]:
        """The other member of each of the user's DMs."""
        query = (
            select(RoomMember.room_id, User)
            .join(User, User.id == RoomMember.user_id)
            .where(RoomMember.room_id.in_(room_ids), RoomMember.user_id != user_id)
        )
        rows = (await s.execute(query)).tuples().all()
        return {room_id: user_ref(peer) for room_id, peer in rows}

    async def add_member(self, room_id: int, user_id: int) -> None:
        """Record `user_id` as a member (idempotent, also when two requests race)."""
        try:
            async with self.db.write() as s:
                if await s.get(RoomMember, (room_id, user_id)) is None:
                    s.add(RoomMember(room_id=room_id, user_id=user_id))
        except IntegrityError:
            pass  # added by a concurrent request: the same outcome

    async def add_members(self, memberships: Sequence[tuple[int, int]]) -> None:
        """Record `(room id, user id)` memberships in one statement; existing ones stay."""
        now = time.time()
        async with self.db.write_connection() as conn:
            await conn.exec_driver_sql(
                # Only placeholders are spliced in: every value is a bound parameter.
                "INSERT INTO room_members (room_id, user_id, added_at) VALUES "  # noqa: S608
                + value_rows(conn.dialect.paramstyle, len(memberships), (None, None, None))
                + " ON CONFLICT DO NOTHING",
                tuple(value for pair in memberships for value in (*pair, now)),
            )

    async def remove_member(self, room_id: int, user_id: int) -> bool:
        """Remove a membership; False when there was none."""
        async with self.db.write() as s:
            done = await s.execute(
                delete(RoomMember).where(
                    RoomMember.room_id == room_id, RoomMember.user_id == user_id
                )
            )
        return bool(getattr(done, "rowcount", 0))

    async def is_member(self, room_id: int, user_id: int) -> bool:
        async with self.db.read() as s:
            return await s.get(RoomMember, (room_id, user_id)) is not None

    async def members(self, room_id: int, *, after: str | None, limit: int) -> list[UserRef]:
        """The room's members by username, those after the name `after` (a page cursor)."""
        query = (
            select(User)
            .join(RoomMember, RoomMember.user_id == User.id)
            .where(RoomMember.room_id == room_id)
            .order_by(User.username_key)
            .limit(min(limit, MEMBERS_PAGE_MAX))
        )
        if after is not None:
            # No username holds NUL (and PostgreSQL cannot bind one): what comes before it.
            query = query.where(User.username_key > after.partition("\x00")[0].casefold())
        async with self.db.read() as s:
            users = (await s.execute(query)).scalars().all()
        return [user_ref(u) for u in users]

    async def set_room_settings(
        self, room_id: int, *, topic: str | None, archived: bool | None, set_topic: bool
    ) -> None:
        """Change the topic (when `set_topic`; None clears it) and/or the archived flag."""
        values: dict[str, object] = {}
        if set_topic:
            values["topic"] = topic
        if archived is not None:
            values["archived"] = archived
        if not values:
            return
        async with self.db.write() as s:
            await s.execute(update(Room).where(Room.id == room_id).values(**values))

    async def last_seq_archived(self, room_id: int) -> tuple[int, bool]:
        """The room's newest seq and whether it is archived, as of now."""
        async with self.db.read() as s:
            row = (
                await s.execute(select(Room.last_seq, Room.archived).where(Room.id == room_id))
            ).first()
        return (int(row[0]), bool(row[1])) if row is not None else (0, False)

    async def last_seqs(self, names: Sequence[str]) -> dict[str, int]:
        """The newest seq of each named room (rooms that do not exist are left out)."""
        async with self.db.read() as s:
            rows = await s.execute(select(Room.name, Room.last_seq).where(Room.name.in_(names)))
            return {name: int(seq) for name, seq in rows.tuples()}
