"""Edits, deletes and reactions, and what message frames show of them.

Each change is one write transaction: lock the room's row (the same row a send's
seq allocation updates, so changes and new messages of a room are totally ordered),
change the message or its reactions, write a `message_changes` row (who, when, old
and new text; `at_seq` = the room's `last_seq` read under that lock), read back the
whole new state for the event. The caller publishes the event after the commit.

A change that changes nothing (the same body again, a reaction already on) stores
nothing and answers with the current state and the newest version it already had.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, and_, case, cast, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat.protocol import (
    DeletedFrame,
    EditedFrame,
    ErrorCode,
    ReactionFrame,
    ReplyRef,
    UserRef,
    iso,
)
from chat.storage.db import Database
from chat.storage.models import Message, MessageChange, Reaction, Room, StoredFile, User
from chat.storage.records import RoomView, user_ref

EXCERPT_CHARS = 100  # what a reply shows of the message it answers
MAX_DISTINCT_REACTIONS = 20  # distinct emoji per message

ChangeFrame = EditedFrame | DeletedFrame | ReactionFrame


class ChangeRefused(Exception):
    """The change is not allowed; `code` is the `error` frame's."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """The whole new state as an event; `changed` False when nothing was stored."""

    frame: ChangeFrame
    changed: bool
    # Content hashes of the files a delete removed: their bytes go once unreferenced.
    released: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ResumeChanges:
    """What a client resuming at some seq missed of older messages."""

    frames: list[ChangeFrame]
    truncated: bool  # more than the cap changed: re-read the history pages
    last_version: int = 0  # the newest version read (page on after it); 0: none


def excerpt(body: str, deleted: bool) -> str:
    return "" if deleted else body[:EXCERPT_CHARS]


async def reactions_of(
    s: AsyncSession, message_ids: Collection[int]
) -> dict[int, dict[str, list[str]]]:
    """`{message id: {emoji: [user names]}}` in one query; emoji in the order of their
    first reaction, users in the order they reacted (as `reaction` frames list them)."""
    if not message_ids:
        return {}
    rows = await s.execute(
        select(Reaction.message_id, Reaction.emoji, User.username)
        .join(User, User.id == Reaction.user_id)
        .where(Reaction.message_id.in_(list(message_ids)))
        .order_by(Reaction.message_id, Reaction.created_at, Reaction.user_id)
    )
    out: dict[int, dict[str, list[str]]] = {}
    for message_id, emoji, name in rows.tuples():
        out.setdefault(message_id, {}).setdefault(emoji, []).append(name)
    return out


async def reply_refs(s: AsyncSession, room_id: int, seqs: Collection[int]) -> dict[int, ReplyRef]:
    """`{seq: what a reply shows of it}` for the room's messages `seqs`."""
    if not seqs:
        return {}
    rows = await s.execute(
        select(Message.seq, Message.body, Message.deleted, User)
        .join(User, User.id == Message.user_id)
        .where(Message.room_id == room_id, Message.seq.in_(list(seqs)))
    )
    return {
        seq: ReplyRef(seq=seq, user=user_ref(user), excerpt=excerpt(body, deleted))
        for seq, body, deleted, user in rows.tuples()
    }


def missing_reply(seq: int) -> ReplyRef:
    """What a reply shows of a message that no longer exists (purged)."""
    return ReplyRef(seq=seq, user=None, excerpt="")


async def _lock_room(s: AsyncSession, room_id: int) -> int:
    """Lock the room's row (PostgreSQL; SQLite's write lock is the whole database) and
    return its `last_seq`; refuse when the room is archived.

    `FOR NO KEY UPDATE`: the lock a send's `UPDATE rooms SET last_seq` takes, so
    the two wait for each other, while inserts that merely reference the room
    (members, read cursors) do not wait for a change.
    """
    locked = select(Room.last_seq, Room.archived).where(Room.id == room_id)
    row = (await s.execute(locked.with_for_update(key_share=True))).one_or_none()
    if row is None:
        raise ChangeRefused(ErrorCode.NOT_FOUND, "no such room, or you may not read it")
    if row.archived:
        raise ChangeRefused(ErrorCode.FORBIDDEN, "the room is archived: read only")
    return int(row.last_seq)


async def _message(s: AsyncSession, room_id: int, seq: int) -> Message:
    msg = await s.scalar(select(Message).where(Message.room_id == room_id, Message.seq == seq))
    if msg is None:
        raise ChangeRefused(ErrorCode.NOT_FOUND, f"no message {seq} in this room")
    return msg


async def _newest_version(s: AsyncSession, message_id: int, *, emoji: str | None = None) -> int:
    """The newest change id of the message (of that emoji's reactions, when given)."""
    query = select(func.max(MessageChange.id)).where(MessageChange.message_id == message_id)
    if emoji is not None:
        query = query.where(MessageChange.emoji == emoji)
    return int(await s.scalar(query) or 0)


async def _reaction_users(s: AsyncSession, message_id: int, emoji: str) -> list[str]:
    rows = await s.scalars(
        select(User.username)
        .join(Reaction, Reaction.user_id == User.id)
        .where(Reaction.message_id == message_id, Reaction.emoji == emoji)
        .order_by(Reaction.created_at, Reaction.user_id)
    )
    return list(rows)


def _record(msg: Message, at_seq: int, kind: str, user: UserRef, now: float) -> MessageChange:
    return MessageChange(
        room_id=msg.room_id,
        message_id=msg.id,
        seq=msg.seq,
        at_seq=at_seq,
        kind=kind,
        user_id=user.id,
        created_at=now,
    )


class ChangeQueries:
    db: Database

    async def reply_ref(self, room_id: int, seq: int) -> ReplyRef | None:
        """What a reply to the room's message `seq` shows; None when there is no such
        message (one read, for replies only). A deleted message can be answered (it
        keeps its seq; the excerpt is empty), so a resent send is never refused for it."""
        async with self.db.read() as s:
            return (await reply_refs(s, room_id, [seq])).get(seq)

    async def edit_message(
        self, room: RoomView, seq: int, user: UserRef, body: str
    ) -> ChangeResult:
        """The author replaces the text. Raises `ChangeRefused` (not_found: no such or a
        deleted message; forbidden: not the author, or the room is archived)."""
        now = time.time()
        async with self.db.write() as s:
            at_seq = await _lock_room(s, room.id)
            msg = await _message(s, room.id, seq)
            if msg.deleted:
                raise ChangeRefused(ErrorCode.NOT_FOUND, f"message {seq} was deleted")
            if msg.user_id != user.id:
                raise ChangeRefused(ErrorCode.FORBIDDEN, "only its author may edit a message")
            if msg.body == body:  # nothing to store: answer with the state as it is
                version = await _newest_version(s, msg.id)
                edited_at = msg.edited_at or msg.created_at
                frame = EditedFrame(
                    room=room.name, seq=seq, body=body, edited_at=iso(edited_at), version=version
                )
                return ChangeResult(frame, changed=False)
            change = _record(msg, at_seq, "edit", user, now)
            change.old_body, change.new_body = msg.body, body
            msg.body, msg.edited_at = body, now
            s.add(change)
            await s.flush()
            edited = EditedFrame(
                room=room.name, seq=seq, body=body, edited_at=iso(now), version=change.id
            )
            return ChangeResult(edited, changed=True)

    async def delete_message(self, room: RoomView, seq: int, user: UserRef) -> ChangeResult:
        """The author, the room's owner or an admin empties the message (it keeps its seq;
        its text stays in the history only) and clears its reactions and files (`released`). Raises
        `ChangeRefused` (not_found, forbidden)."""
        now = time.time()
        moderator = room.managed_by(user)  # in a DM, admins only: its opener has no powers
        async with self.db.write() as s:
            at_seq = await _lock_room(s, room.id)
            msg = await _message(s, room.id, seq)
            if msg.user_id != user.id and not moderator:
                raise ChangeRefused(
                    ErrorCode.FORBIDDEN,
                    "only the author, the room's owner or an admin may delete a message",
                )
            if msg.deleted:
                version = await _newest_version(s, msg.id)
                return ChangeResult(DeletedFrame(room=room.name, seq=seq, version=version), False)
            change = _record(msg, at_seq, "delete", user, now)
            change.old_body = msg.body
            msg.body, msg.deleted = "", True
            s.add(change)
            await s.execute(delete(Reaction).where(Reaction.message_id == msg.id))
            files = await s.scalars(
                delete(StoredFile)
                .where(StoredFile.message_id == msg.id)
                .returning(StoredFile.sha256)
            )
            released = tuple(files.all())
            await s.flush()
            frame = DeletedFrame(room=room.name, seq=seq, version=change.id)
            return ChangeResult(frame, True, released)

    async def react(
        self, room: RoomView, seq: int, user: UserRef, emoji: str, on: bool
    ) -> ChangeResult:
        """Set or clear the user's `emoji` on the message. Raises `ChangeRefused`
        (not_found, forbidden: archived, too_large: a 21st distinct emoji)."""
        now = time.time()
        async with self.db.write() as s:
            at_seq = await _lock_room(s, room.id)
            msg = await _message(s, room.id, seq)
            if msg.deleted:
                raise ChangeRefused(ErrorCode.NOT_FOUND, f"message {seq} was deleted")
            mine = await s.get(Reaction, (msg.id, emoji, user.id))
            changed = on != (mine is not None)
            if changed and on:
                distinct = set(
                    await s.scalars(
                        select(Reaction.emoji).where(Reaction.message_id == msg.id).distinct()
                    )
                )
                if emoji not in distinct and len(distinct) >= MAX_DISTINCT_REACTIONS:
                    raise ChangeRefused(
                        ErrorCode.TOO_LARGE,
                        f"a message has at most {MAX_DISTINCT_REACTIONS} different reactions",
                    )
                s.add(Reaction(message_id=msg.id, emoji=emoji, user_id=user.id, created_at=now))
            elif changed and mine is not None:
                await s.delete(mine)
            if changed:
                change = _record(msg, at_seq, "react" if on else "unreact", user, now)
                change.emoji = emoji
                s.add(change)
                await s.flush()
                version = change.id
            else:
                version = await _newest_version(s, msg.id, emoji=emoji)
            users = await _reaction_users(s, msg.id, emoji)
            frame = ReactionFrame(
                room=room.name, seq=seq, emoji=emoji, users=users, version=version
            )
            return ChangeResult(frame, changed)

    async def changes_since(self, room: RoomView, since: int, limit: int) -> ResumeChanges:
        """Whole-state frames for the messages with seq <= `since` changed at or after
        `since` (`at_seq >= since`): the resume rule of a join without `changes_after`."""
        where = [MessageChange.at_seq >= since, MessageChange.seq <= since]
        return await self._change_frames(room.id, room.name, where, limit)

    async def changes_after(
        self, room: RoomView, after: int, upto_seq: int, limit: int
    ) -> ResumeChanges:
        """Whole-state frames for the messages with seq <= `upto_seq` changed by a change
        with a version above `after` (the newest the client saw): exact, whatever the
        change's `at_seq` or when its event went out."""
        where = [MessageChange.id > after, MessageChange.seq <= upto_seq]
        return await self._change_frames(room.id, room.name, where, limit)

    async def newest_change_version(self, room_id: int) -> int:
        """The room's newest change id (0: none yet), for `joined`."""
        async with self.db.read() as s:
            query = select(func.max(MessageChange.id)).where(MessageChange.room_id == room_id)
            return int(await s.scalar(query) or 0)

    # --- for the hub: changes whose event a process missed (`chat.hub.routing.RoomLog`)

    async def newest_change_versions(self, rooms: Sequence[str]) -> dict[str, int]:
        """Each named room's newest change id (rooms without changes are left out)."""
        async with self.db.read() as s:
            rows = await s.execute(
                select(Room.name, func.max(MessageChange.id))
                .join(MessageChange, MessageChange.room_id == Room.id)
                .where(Room.name.in_(list(rooms)))
                .group_by(Room.name)
            )
            return {name: int(version) for name, version in rows.tuples()}

    async def changes_above(self, floors: Mapping[str, int]) -> dict[str, tuple[int, int]]:
        """`{room: (newest change id, how many changes)}` of the changes of each named
        room with an id above its floor (rooms with none are left out). One query; each
        room costs an index range scan of its changes above the floor only."""
        if not floors:
            return {}
        # Typed: PostgreSQL would resolve a CASE of bare parameters as text.
        floor = cast(case(dict(floors), value=Room.name, else_=0), BigInteger)
        async with self.db.read() as s:
            rows = await s.execute(
                select(Room.name, func.max(MessageChange.id), func.count(MessageChange.id))
                .join(
                    MessageChange,
                    and_(MessageChange.room_id == Room.id, MessageChange.id > floor),
                )
                .where(Room.name.in_(list(floors)))
                .group_by(Room.name)
            )
            return {name: (int(newest), int(n)) for name, newest, n in rows.tuples()}

    async def room_changes_after(
        self, room: str, after: int, limit: int
    ) -> tuple[list[ChangeFrame], int]:
        """Whole-state frames for the named room's changes with an id above `after`,
        oldest first, at most `limit` groups; and the newest version read (page on
        after it; 0 when there was nothing)."""
        async with self.db.read() as s:
            room_id = await s.scalar(select(Room.id).where(Room.name == room))
        if room_id is None:
            return [], 0
        page = await self._change_frames(room_id, room, [MessageChange.id > after], limit)
        return page.frames, page.last_version

    async def _change_frames(
        self, room_id: int, room: str, where: Sequence[ColumnElement[bool]], limit: int
    ) -> ResumeChanges:
        """One frame per message and what changed among the changes `where` selects
        (`deleted`, else `edited`, and a `reaction` per emoji whose reactions changed),
        oldest change first, each with the current state and its newest version; at most
        `limit` groups (then `truncated`)."""
        async with self.db.read() as s:
            version = func.max(MessageChange.id)
            groups = (
                await s.execute(
                    select(
                        MessageChange.message_id, MessageChange.seq, MessageChange.emoji, version
                    )
                    .where(MessageChange.room_id == room_id, *where)
                    .group_by(MessageChange.message_id, MessageChange.seq, MessageChange.emoji)
                    .order_by(version)
                    .limit(limit + 1)
                )
            ).all()
            truncated = len(groups) > limit
            groups = groups[:limit]
            ids = {row[0] for row in groups}
            if not ids:
                return ResumeChanges([], truncated)
            state = {
                row.id: row
                for row in (
                    await s.execute(
                        select(
                            Message.id,
                            Message.body,
                            Message.edited_at,
                            Message.created_at,
                            Message.deleted,
                        ).where(Message.id.in_(ids))
                    )
                ).all()
            }
            reactions = await reactions_of(s, ids)
        newest: dict[int, int] = {}
        for message_id, _, _, v in groups:
            newest[message_id] = max(newest.get(message_id, 0), int(v))
        frames: list[ChangeFrame] = []
        for message_id, seq, emoji, v in groups:
            msg: Any = state.get(message_id)
            if msg is None:  # purged meanwhile
                continue
            if msg.deleted:  # one frame, at the place of the message's newest change
                if int(v) == newest[message_id]:
                    frames.append(DeletedFrame(room=room, seq=seq, version=int(v)))
                continue
            if emoji is None:
                frames.append(
                    EditedFrame(
                        room=room,
                        seq=seq,
                        body=msg.body,
                        edited_at=iso(msg.edited_at or msg.created_at),
                        version=int(v),
                    )
                )
            else:
                users = reactions.get(message_id, {}).get(emoji, [])
                frames.append(
                    ReactionFrame(room=room, seq=seq, emoji=emoji, users=users, version=int(v))
                )
        return ResumeChanges(frames, truncated, last_version=int(groups[-1][3]))

    async def message_history(
        self, room: RoomView, seq: int, *, after: int = 0, limit: int
    ) -> list[dict[str, object]] | None:
        """The message's changes with a version after `after`, oldest first, at most
        `limit` (None when there is no such message): the only place a deleted
        message's text is kept."""
        async with self.db.read() as s:
            message_id = await s.scalar(
                select(Message.id).where(Message.room_id == room.id, Message.seq == seq)
            )
            if message_id is None:
                return None
            rows: Sequence[tuple[MessageChange, User]] = (
                (
                    await s.execute(
                        select(MessageChange, User)
                        .join(User, User.id == MessageChange.user_id)
                        .where(MessageChange.message_id == message_id, MessageChange.id > after)
                        .order_by(MessageChange.id)
                        .limit(limit)
                    )
                )
                .tuples()
                .all()
            )
        return [
            {
                "version": change.id,
                "kind": change.kind,
                "user": user_ref(user).model_dump(exclude_none=True),
                "at": iso(change.created_at),
                "at_seq": change.at_seq,
                "old_body": change.old_body,
                "new_body": change.new_body,
                "emoji": change.emoji,
            }
            for change, user in rows
        ]
