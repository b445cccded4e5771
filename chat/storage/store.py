"""Queries: users, tokens, rooms, members and messages. Each method is one unit of work."""

from __future__ import annotations

import time
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import cast

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from chat.protocol import AckFrame, MessageFrame, UserRef, iso
from chat.storage.db import Database
from chat.storage.models import BotToken, Message, RefreshToken, Room, RoomMember, User
from chat.storage.ttl_cache import TTLCache

USERNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


BATCH_RETRIES = 3  # a batch that hit a ref stored by another process meanwhile
USER_CACHE_SECONDS = 2.0  # how long a token check trusts a user row it read
USER_CACHE_MAX = 100_000


class InputError(ValueError):
    """Input that breaks a documented rule; the message says which."""


class Conflict(Exception):
    """The thing already exists (a username or a room name)."""


def normalize_username(raw: str) -> tuple[str, str]:
    """Return (display name, uniqueness key). Raises `InputError`.

    NFKC folds compatibility look-alikes (fullwidth letters); anything outside
    ASCII letters, digits, `_`, `.` and `-` (zero-width spaces included) is refused.
    """
    name = unicodedata.normalize("NFKC", raw).strip()
    if not 3 <= len(name) <= 32:
        raise InputError("username must be 3 to 32 characters")
    if not set(name) <= USERNAME_CHARS:
        raise InputError("username may contain only letters, digits, '_', '.' and '-'")
    return name, name.casefold()


def normalize_room_name(raw: str, max_chars: int) -> str:
    """A room name: NFC, trimmed, printable, bounded. Raises `InputError`."""
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise InputError("room name must not be empty")
    if len(name) > max_chars:
        raise InputError(f"room name must be at most {max_chars} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise InputError("room name must not contain control or invisible characters")
    return name


def check_body(body: str) -> str | None:
    """Why a message body is refused, or None when it is fine (length checked elsewhere)."""
    if body.isprintable() and body.strip(" "):  # the common case, at C speed
        return None
    if "\x00" in body:
        return "body must not contain NUL characters"
    visible = "".join(c for c in body if unicodedata.category(c) not in ("Cf", "Cc", "Zs"))
    if not visible.strip():
        return "body must not be empty or only whitespace"
    return None


def user_ref(user: User) -> UserRef:
    return UserRef(id=user.id, name=user.username, role=user.role)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class TokenUser:
    """What checking a token needs to know about its user."""

    ref: UserRef
    banned: bool
    token_version: int


@dataclass(frozen=True, slots=True)
class RoomView:
    id: int
    name: str
    private: bool
    owner: UserRef
    last_seq: int
    member: bool
    created_at: float

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "private": self.private,
            "owner": self.owner.model_dump(),
            "last_seq": self.last_seq,
            "member": self.member,
            "created_at": iso(self.created_at),
        }


def value_rows(paramstyle: str, n: int, types: tuple[str | None, ...]) -> str:
    """Placeholders `(?, ?), (?, ?)...` for `n` rows of driver-level SQL, in the
    driver's style (`$1::bigint, $2...` for asyncpg, casting where a type is given)."""
    if paramstyle != "numeric_dollar":
        row = "(" + ", ".join("?" * len(types)) + ")"
        return ", ".join([row] * n)
    out = []
    for r in range(n):
        marks = (
            f"${r * len(types) + i + 1}" + (f"::{kind}" if kind else "")
            for i, kind in enumerate(types)
        )
        out.append("(" + ", ".join(marks) + ")")
    return ", ".join(out)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to store: the sender's `(user, ref)` makes it idempotent."""

    room: RoomView
    user: UserRef
    ref: str
    body: str


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored message: its ack for the sender and its frame for everyone."""

    ack: AckFrame
    frame: MessageFrame
    duplicate: bool


class Store:
    """All database access of the server."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._users: TTLCache[int, TokenUser | None] = TTLCache(USER_CACHE_SECONDS, USER_CACHE_MAX)

    # --- users ---------------------------------------------------------------

    async def create_user(self, username: str, password_hash: str | None, role: str) -> User:
        name, key = normalize_username(username)
        try:
            async with self.db.write() as s:
                user = User(username=name, username_key=key, password_hash=password_hash, role=role)
                s.add(user)
                await s.flush()
                return user
        except IntegrityError:
            raise Conflict("that username is taken") from None

    async def user_by_id(self, user_id: int) -> User | None:
        async with self.db.read() as s:
            return await s.get(User, user_id)

    async def user_for_token(self, user_id: int) -> TokenUser | None:
        """The token-checking facts of a user, from a cache of `USER_CACHE_SECONDS`.

        Connecting checks the token's user twice; a storm of reconnects would
        otherwise read the same rows thousands of times a second. Changes made
        through this process (revocation, ban, password) drop the entry at once;
        one made by another process is seen here within the cache's lifetime
        (the sockets it must close are closed through the broker at once).
        """
        return await self._users.get(user_id, partial(self._token_user, user_id))

    async def _token_user(self, user_id: int) -> TokenUser | None:
        # Core, not an ORM session: a storm of handshakes makes this the connect path's read.
        query = select(User.username, User.role, User.banned, User.token_version).where(
            User.id == user_id
        )
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        name, role, banned, version = row
        ref = UserRef(id=user_id, name=name, role=role)  # type: ignore[arg-type]
        return TokenUser(ref, banned, version)

    async def user_by_name(self, username: str) -> User | None:
        try:
            _, key = normalize_username(username)
        except InputError:
            return None
        async with self.db.read() as s:
            return (await s.execute(select(User).where(User.username_key == key))).scalar()

    async def bump_token_version(self, user_id: int, *, banned: bool | None = None) -> None:
        """Kill every token of the user issued so far (and optionally (un)ban them)."""
        self._users.drop(user_id)
        values: dict[str, object] = {"token_version": User.token_version + 1}
        if banned is not None:
            values["banned"] = banned
        async with self.db.write() as s:
            await s.execute(update(User).where(User.id == user_id).values(**values))
            await s.execute(
                update(RefreshToken)
                .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        self._users.drop(user_id)  # and again: a read may have raced the write

    async def set_password(self, user_id: int, password_hash: str) -> None:
        async with self.db.write() as s:
            await s.execute(
                update(User).where(User.id == user_id).values(password_hash=password_hash)
            )
        await self.bump_token_version(user_id)

    # --- refresh and bot tokens --------------------------------------------

    async def add_refresh_token(
        self, jti: str, user_id: int, family: str, expires_at: float
    ) -> None:
        async with self.db.write() as s:
            s.add(RefreshToken(jti=jti, user_id=user_id, family=family, expires_at=expires_at))

    async def use_refresh_token(self, jti: str) -> RefreshToken | None:
        """Mark a refresh token used. Reuse of a used one revokes its whole family."""
        now = time.time()
        async with self.db.write() as s:
            # Row lock on PostgreSQL: two racing refreshes cannot both use one token.
            token = await s.get(RefreshToken, jti, with_for_update=True)
            if token is None:
                return None
            if token.used_at is not None or token.revoked_at is not None:
                await s.execute(
                    update(RefreshToken)
                    .where(RefreshToken.family == token.family)
                    .values(revoked_at=now)
                )
                return None
            if token.expires_at < now:
                return None
            token.used_at = now
            return token

    async def add_bot_token(self, jti: str, user_id: int) -> None:
        async with self.db.write() as s:
            s.add(BotToken(jti=jti, user_id=user_id))

    async def bot_token_live(self, jti: str) -> bool:
        async with self.db.read() as s:
            token = await s.get(BotToken, jti)
            return token is not None and token.revoked_at is None

    async def revoke_bot(self, user_id: int) -> bool:
        """Revoke every token of a bot; False when there is no such bot."""
        user = await self.user_by_id(user_id)
        if user is None or user.role != "bot":
            return False
        async with self.db.write() as s:
            await s.execute(
                update(BotToken)
                .where(BotToken.user_id == user_id, BotToken.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        await self.bump_token_version(user_id)
        return True

    # --- rooms ----------------------------------------------------------------

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

    async def messages_between(
        self, room: str, after: int, upto: int, limit: int
    ) -> list[MessageFrame]:
        """Messages of the room called `room` with `after` < seq <= `upto`, oldest first."""
        query = (
            select(Message, User)
            .join(Room, Room.id == Message.room_id)
            .join(User, User.id == Message.user_id)
            .where(Room.name == room, Message.seq > after, Message.seq <= upto)
            .order_by(Message.seq.asc())
            .limit(limit)
        )
        async with self.db.read() as s:
            rows: Sequence[tuple[Message, User]] = (await s.execute(query)).tuples().all()
        return [self._frame(room, m, u) for m, u in rows]

    # --- messages -------------------------------------------------------------

    async def save_messages(self, batch: Sequence[NewMessage]) -> list[Stored]:
        """Store a batch in one transaction; a result per item, in the batch's order.

        A `(user, ref)` stored before (by any process) or earlier in the batch
        answers with the first message (`duplicate`). Each room's seqs for the
        batch come from one `last_seq = last_seq + k ... RETURNING` update in
        the same transaction as the insert: the row lock (or SQLite's write
        lock) keeps several processes gapless, and a rollback gives every seq
        back. A unique violation (the same ref stored by another process
        between our check and our insert) retries the batch, then its messages
        one by one.
        """
        for _ in range(BATCH_RETRIES):
            try:
                return await self._save_batch(batch)
            except IntegrityError:
                continue  # a ref another process stored meanwhile: look again
        # Still racing another process on the same refs: one at a time, so a send
        # that races nobody is never refused for one that does.
        results: list[Stored] = []
        for item in batch:
            for attempt in range(BATCH_RETRIES):
                try:
                    results += await self._save_batch([item])
                    break
                except IntegrityError:
                    if attempt == BATCH_RETRIES - 1:
                        raise
        return results

    async def _save_batch(self, batch: Sequence[NewMessage]) -> list[Stored]:
        now = time.time()
        async with self.db.write_connection() as conn:
            earlier = await self._stored_refs(conn, batch)
            fresh: dict[tuple[int, str], NewMessage] = {}
            for item in batch:
                key = (item.user.id, item.ref)
                if key not in earlier and key not in fresh:
                    fresh[key] = item
            first: dict[tuple[int, str], Stored] = {}
            if fresh:
                rows = await self._insert_batch(conn, list(fresh.values()), now)
                ts = iso(now)  # the whole batch's time, formatted once
                for (key, item), row in zip(fresh.items(), rows, strict=True):
                    first[key] = self._stored(
                        item.room.name, item.user, item.ref, item.body, row, duplicate=False, ts=ts
                    )
        results: list[Stored] = []
        for item in batch:
            key = (item.user.id, item.ref)
            if key in first:  # stored now: the first occurrence, then repeats of it
                stored = first[key]
                results.append(stored)
                first[key] = Stored(stored.ack, stored.frame, duplicate=True)
            else:
                results.append(earlier[key])
        return results

    async def _insert_batch(
        self, conn: AsyncConnection, items: list[NewMessage], now: float
    ) -> list[tuple[int, int, float]]:
        """Take each room's seqs for `items` and insert them: `(id, seq, created_at)` each.

        Two statements whatever the batch: one `UPDATE ... FROM (VALUES ...)
        RETURNING` for every room's `last_seq`, one multi-row `INSERT ...
        RETURNING`. Driver-level SQL: building a SQLAlchemy expression with a
        bound parameter per value cost more than the database work itself.
        """
        counts = Counter(item.room.id for item in items)
        style = conn.dialect.paramstyle
        bump = await conn.exec_driver_sql(
            # Only placeholders are spliced in: every value is a bound parameter.
            "UPDATE rooms SET last_seq = rooms.last_seq + v.column2 FROM (VALUES "  # noqa: S608
            + value_rows(style, len(counts), ("bigint", "bigint"))
            + ") AS v WHERE rooms.id = v.column1 RETURNING rooms.id, rooms.last_seq",
            tuple(value for pair in counts.items() for value in pair),
        )
        last_seqs = cast(Sequence[tuple[int, int]], bump.all())
        next_seq = {room_id: last - counts[room_id] + 1 for room_id, last in last_seqs}
        values: list[object] = []
        seqs: list[int] = []
        for item in items:
            seq = next_seq[item.room.id]
            next_seq[item.room.id] = seq + 1
            seqs.append(seq)
            values += (item.room.id, seq, item.user.id, item.ref, item.body, now)
        inserted = await conn.exec_driver_sql(
            "INSERT INTO messages (room_id, seq, user_id, ref, body, created_at) VALUES "  # noqa: S608
            + value_rows(style, len(items), (None,) * 6)
            + " RETURNING id, room_id, seq",
            tuple(values),
        )
        new_rows = cast(Sequence[tuple[int, int, int]], inserted.all())
        ids = {(room_id, seq): message_id for message_id, room_id, seq in new_rows}
        return [(ids[(item.room.id, seq)], seq, now) for item, seq in zip(items, seqs, strict=True)]

    async def _stored_refs(
        self, conn: AsyncConnection, batch: Sequence[NewMessage]
    ) -> dict[tuple[int, str], Stored]:
        """The first messages of the batch's `(user, ref)` pairs stored before now.

        One index lookup per pair, by joining the pairs as a `VALUES` list:
        `user_id IN (...) AND ref IN (...)` made SQLite probe every user with
        every ref (n² lookups, 80 ms for a batch of 500).
        """
        users = {item.user.id: item.user for item in batch}
        pairs = {(item.user.id, item.ref) for item in batch}
        rows = await conn.exec_driver_sql(
            # Only placeholders are spliced in: every value is a bound parameter.
            "SELECT m.id, m.seq, m.created_at, m.user_id, m.ref, m.body, r.name FROM (VALUES "  # noqa: S608
            + value_rows(conn.dialect.paramstyle, len(pairs), ("bigint", "text"))
            + ") AS v JOIN messages AS m ON m.user_id = v.column1 AND m.ref = v.column2"
            " JOIN rooms AS r ON r.id = m.room_id",
            tuple(value for pair in pairs for value in pair),
        )
        found: dict[tuple[int, str], Stored] = {}
        matches = cast(Sequence[tuple[int, int, float, int, str, str, str]], rows.all())
        for message_id, seq, created_at, user_id, ref, body, room in matches:
            row = (message_id, seq, created_at)
            user = users[user_id]
            found[(user_id, ref)] = self._stored(room, user, ref, body, row, duplicate=True)
        return found

    @staticmethod
    def _stored(
        room: str,
        user: UserRef,
        ref: str,
        body: str,
        row: tuple[int, int, float],
        *,
        duplicate: bool,
        ts: str | None = None,
    ) -> Stored:
        """The ack and frame of a stored message, `row` being `(id, seq, created_at)`
        (`ts`: `created_at` already formatted)."""
        message_id, seq, created_at = row
        ts = ts or iso(created_at)
        # Built without validation: every value comes from a checked frame or the database.
        ack = AckFrame.model_construct(ref=ref, room=room, id=message_id, seq=seq, ts=ts)
        frame = MessageFrame.model_construct(
            room=room, id=message_id, seq=seq, user=user, body=body, ts=ts
        )
        return Stored(ack, frame, duplicate)

    async def messages(
        self,
        room: RoomView,
        *,
        before: int | None = None,
        after: int | None = None,
        upto: int | None = None,
        limit: int,
    ) -> list[MessageFrame]:
        """A page of history: newest first with `before`, oldest first with `after`."""
        conditions = [Message.room_id == room.id]
        if after is not None:
            conditions.append(Message.seq > after)
            order = Message.seq.asc()
        else:
            order = Message.seq.desc()
        if before is not None:
            conditions.append(Message.seq < before)
        if upto is not None:
            conditions.append(Message.seq <= upto)
        query = (
            select(Message, User)
            .join(User, User.id == Message.user_id)
            .where(and_(*conditions))
            .order_by(order)
            .limit(limit)
        )
        async with self.db.read() as s:
            rows: Sequence[tuple[Message, User]] = (await s.execute(query)).tuples().all()
        return [self._frame(room.name, m, u) for m, u in rows]

    @staticmethod
    def _frame(room_name: str, msg: Message, user: User) -> MessageFrame:
        return MessageFrame(
            room=room_name,
            id=msg.id,
            seq=msg.seq,
            user=user_ref(user),
            body=msg.body,
            ts=iso(msg.created_at),
        )

    async def count_users(self) -> int:
        async with self.db.read() as s:
            return int(await s.scalar(select(func.count(User.id))) or 0)
