"""Notifications caused by messages, stored in the message batch's own transaction.

`BatchNotifier.notify` runs inside `MessageQueries._save_batch`, on the batch's
connection, right after the insert: a notification exists exactly when its
message does (a rolled-back batch leaves neither). The rules:

- `@name` of a user who can read the room (public: anyone not banned; private
  or DM: its members, and admins) gives them a `mention`; never the sender's own.
- In a DM every message gives the peer a `dm` (one notification, also when it
  mentions them).
- At most one notification per (message, user); at most `MAX_MENTIONS` names.
- The user's level for the room (`room_states.notify`): `nothing` gives none,
  `mentions` only mentions, `all` every DM message. None is the room kind's
  default (`all` for DMs, `mentions` for rooms). In a group room `all` is the
  same as `mentions` for now: notifying every message would read every
  member's level on every send.

Ordinary messages cost nothing here: no `@` and not in a DM means no SQL. The
kind of a room never changes, so it is read once per process and cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy.ext.asyncio import AsyncConnection

from chat.protocol import NotificationFrame, UserRef, iso
from chat.storage.mentions import mentioned
from chat.storage.messages import value_rows
from chat.storage.records import NewMessage, Notice

EXCERPT_CHARS = 200  # a notification's body: the start of the message
TITLE_CHARS = 200  # the column's size
ROOM_CACHE_MAX = 100_000  # rooms whose kind this process remembers
LEVELS = ("all", "mentions", "nothing")
# Rows per INSERT: a batch can cause far more notifications (500 messages naming 20
# people each) than one statement may bind parameters (asyncpg: 32,767; 8 a row).
INSERT_ROWS_MAX = 2000


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` cut to at most `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def default_level(kind: str) -> str:
    """What notifies a user who chose nothing: every DM message, mentions elsewhere."""
    return "all" if kind == "dm" else "mentions"


@dataclass(frozen=True, slots=True)
class _RoomKind:
    kind: str  # "room" or "dm"
    pair: tuple[int, ...]  # a DM's two members (from its dm_key); () for rooms


@dataclass(frozen=True, slots=True)
class _Target:
    kind: str  # mention or dm
    mentioned: bool


class BatchNotifier:
    """Works out, stores and returns the notifications of a batch of new messages."""

    def __init__(self) -> None:
        self._rooms: dict[int, _RoomKind] = {}

    async def notify(
        self, conn: AsyncConnection, items: Sequence[NewMessage], seqs: Sequence[int], now: float
    ) -> list[tuple[Notice, ...]]:
        """Store the notifications of `items` (stored with `seqs` at `now`); one tuple
        of them per item, in order (empty for most)."""
        found: list[tuple[Notice, ...]] = [()] * len(items)
        names = {i: mentioned(item.body) for i, item in enumerate(items) if "@" in item.body}
        names = {i: found_names for i, found_names in names.items() if found_names}
        # Only private rooms can be DMs: public rooms never need their kind.
        unknown = {m.room.id for m in items if m.room.private and m.room.id not in self._rooms}
        if unknown:
            await self._load_rooms(conn, unknown)
        dms = {i for i, m in enumerate(items) if m.room.private and self._kind(m.room.id) == "dm"}
        if not names and not dms:
            return found
        by_key = await self._users_by_key(conn, {k for n in names.values() for r in n for k in r})
        wanted: dict[tuple[int, int], _Target] = {}  # (item index, user id)
        for i, item in enumerate(items):
            sender = item.user.id
            if i in dms:
                for peer in self._rooms[item.room.id].pair:
                    if peer != sender:
                        wanted[(i, peer)] = _Target("dm", mentioned=False)
            for readings in names.get(i, ()):
                user_id = next((by_key[r] for r in readings if r in by_key), None)
                if user_id is None or user_id == sender:
                    continue
                kind = "dm" if (i, user_id) in wanted else "mention"
                wanted[(i, user_id)] = _Target(kind, mentioned=True)
        if not wanted:
            return found
        allowed = await self._allowed(conn, items, wanted)
        notes = [
            (i, user_id) for (i, user_id), target in wanted.items() if allowed.get((i, user_id))
        ]
        if not notes:
            return found
        stored = await self._insert(conn, items, seqs, wanted, notes, now)
        per_item: dict[int, list[Notice]] = {}
        for (i, _), notice in zip(notes, stored, strict=True):
            per_item.setdefault(i, []).append(notice)
        for i, notices in per_item.items():
            found[i] = tuple(notices)
        return found

    def _kind(self, room_id: int) -> str:
        info = self._rooms.get(room_id)
        return info.kind if info else "room"

    async def _load_rooms(self, conn: AsyncConnection, room_ids: set[int]) -> None:
        ids = sorted(room_ids)
        marks = ", ".join(["?"] * len(ids))
        if conn.dialect.paramstyle == "numeric_dollar":
            marks = ", ".join(f"${n + 1}::bigint" for n in range(len(ids)))
        result = await conn.exec_driver_sql(
            # Only placeholders are spliced in: every value is a bound parameter.
            f"SELECT id, kind, dm_key FROM rooms WHERE id IN ({marks})",  # noqa: S608
            tuple(ids),
        )
        if len(self._rooms) + len(ids) > ROOM_CACHE_MAX:
            self._rooms.clear()  # rare, and refilled on demand
        for room_id, kind, dm_key in cast(Sequence[tuple[int, str, str | None]], result.all()):
            pair = tuple(int(p) for p in dm_key.split(":")) if kind == "dm" and dm_key else ()
            self._rooms[room_id] = _RoomKind(kind, pair)

    @staticmethod
    async def _users_by_key(conn: AsyncConnection, keys: set[str]) -> dict[str, int]:
        if not keys:
            return {}
        ordered = sorted(keys)
        marks = ", ".join(["?"] * len(ordered))
        if conn.dialect.paramstyle == "numeric_dollar":
            marks = ", ".join(f"${n + 1}" for n in range(len(ordered)))
        result = await conn.exec_driver_sql(
            # Only placeholders are spliced in: every value is a bound parameter.
            f"SELECT username_key, id FROM users WHERE username_key IN ({marks})",  # noqa: S608
            tuple(ordered),
        )
        return {key: int(user_id) for key, user_id in cast(Sequence[tuple[str, int]], result.all())}

    async def _allowed(
        self,
        conn: AsyncConnection,
        items: Sequence[NewMessage],
        wanted: dict[tuple[int, int], _Target],
    ) -> dict[tuple[int, int], bool]:
        """Which wanted notifications may be made: the user can read the room and
        their level lets it through. One query: a `VALUES` list of (room, user)."""
        pairs = sorted({(items[i].room.id, user_id) for i, user_id in wanted})
        result = await conn.exec_driver_sql(
            # Only placeholders are spliced in: every value is a bound parameter.
            "SELECT v.column1, v.column2, u.role, u.banned OR u.disabled,"  # noqa: S608
            " EXISTS (SELECT 1 FROM room_members AS m"
            "  WHERE m.room_id = v.column1 AND m.user_id = v.column2),"
            " (SELECT s.notify FROM room_states AS s"
            "  WHERE s.room_id = v.column1 AND s.user_id = v.column2)"
            " FROM (VALUES "
            + value_rows(conn.dialect.paramstyle, len(pairs), ("bigint", "bigint"))
            + ") AS v JOIN users AS u ON u.id = v.column2",
            tuple(value for pair in pairs for value in pair),
        )
        facts = {
            (room_id, user_id): (role, bool(banned), bool(member), notify)
            for room_id, user_id, role, banned, member, notify in cast(
                Sequence[tuple[int, int, str, object, object, str | None]], result.all()
            )
        }
        allowed: dict[tuple[int, int], bool] = {}
        for (i, user_id), target in wanted.items():
            room = items[i].room
            fact = facts.get((room.id, user_id))
            if fact is None:
                continue  # no such user (any more)
            role, banned, member, notify = fact
            readable = not banned and (not room.private or member or role == "admin")
            level = notify or default_level(self._kind(room.id))
            if not readable or level == "nothing":
                continue
            # A DM message without a mention needs `all`; mentions pass `mentions` too.
            allowed[(i, user_id)] = target.mentioned or level == "all"
        return allowed

    async def _insert(
        self,
        conn: AsyncConnection,
        items: Sequence[NewMessage],
        seqs: Sequence[int],
        wanted: dict[tuple[int, int], _Target],
        notes: list[tuple[int, int]],
        now: float,
    ) -> list[Notice]:
        rows: list[tuple[int, str, str, str]] = []  # (user id, kind, title, body)
        values: list[object] = []
        for i, user_id in notes:
            item, kind = items[i], wanted[(i, user_id)].kind
            title = excerpt(_title(item.user, item.room.name, kind), TITLE_CHARS)
            body = excerpt(item.body)
            rows.append((user_id, kind, title, body))
            values += (user_id, kind, item.room.id, seqs[i], title, body, item.user.id, now)
        # RETURNING's order is not promised: match rows by (user, room, seq).
        ids: dict[tuple[int, int, int], int] = {}
        for start in range(0, len(notes), INSERT_ROWS_MAX):
            part = values[start * 8 : (start + INSERT_ROWS_MAX) * 8]
            result = await conn.exec_driver_sql(
                # Only placeholders are spliced in: every value is a bound parameter.
                "INSERT INTO notifications"  # noqa: S608
                " (user_id, kind, room_id, seq, title, body, from_user_id, created_at) VALUES "
                + value_rows(conn.dialect.paramstyle, len(part) // 8, (None,) * 8)
                + " RETURNING id, user_id, room_id, seq",
                tuple(part),
            )
            for note_id, user_id, room_id, seq in cast(
                Sequence[tuple[int, int, int, int]], result.all()
            ):
                ids[(user_id, room_id, seq)] = note_id
        ts = iso(now)
        out: list[Notice] = []
        for (i, _), (user_id, kind, title, body) in zip(notes, rows, strict=True):
            item = items[i]
            frame = NotificationFrame(
                id=ids[(user_id, item.room.id, seqs[i])],
                kind=kind,
                room=item.room.name,
                seq=seqs[i],
                title=title,
                body=body,
                ts=ts,
                from_=item.user,
            )
            out.append(Notice(user_id, frame))
        return out


def _title(sender: UserRef, room: str, kind: str) -> str:
    who = sender.display_name or sender.name
    return who if kind == "dm" else f"{who} in #{room}"
