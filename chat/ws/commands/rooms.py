"""`join` and `leave`; `attach`, the join's registration and replay, shared with the
event stream (`chat.stream.response`)."""

from __future__ import annotations

from chat.hub import Connection
from chat.protocol import ErrorCode, FrameError, JoinedFrame, JoinIn, LeaveIn, LeftFrame, encode
from chat.storage.records import RoomView
from chat.ws.commands.context import CommandContext
from chat.ws.deps import WsDeps


async def join(session: CommandContext, frame: JoinIn) -> None:
    """Join a room: presence, `joined`, then what the client missed since `since`
    (see `attach`)."""
    conn, settings = session.conn, session.settings
    if frame.room not in conn.rooms and len(conn.rooms) >= settings.max_rooms_per_connection:
        raise FrameError(
            ErrorCode.FORBIDDEN,
            f"at most {settings.max_rooms_per_connection} rooms per connection",
            frame.ref,
        )
    # Before any database work: a join may replay `replay_cap` messages.
    await session.rate_limit("join", settings.join_rate, settings.join_burst, frame.ref)
    while True:
        removals = conn.removals.get(frame.room, 0)  # a removal landing during the join wins
        room = await session.readable_room(frame.room, frame.ref)
        if not room.member and not room.private:
            # Joining a public room makes one a member (once: `member` is then true).
            await session.deps.memberships.record(room.id, session.user.id)
        session.joined[room.name] = room  # what sends need, without a read each
        joined = await attach(
            session.deps, conn, room, frame.since, frame.changes_after, frame.ref, removals
        )
        if joined is not None:
            return
        session.joined.pop(room.name, None)  # removed meanwhile: start over


async def attach(
    deps: WsDeps,
    conn: Connection,
    room: RoomView,
    since: int | None,
    changes_after: int | None,
    ref: str | None,
    removals: int,
) -> JoinedFrame | None:
    """Register `conn` in `room` and send `joined`, then the messages after `since`,
    then the changes to the messages up to it (those after `changes_after` when
    given, else those made at or after `since`). None when a removal (counted in
    `conn.removals`, `removals` before the room was read) overtook it: nothing of
    the room was sent, and the caller reads the room again.

    The connection is registered (buffering live events) before `last_seq` and
    the changes are read, so a message or change stored meanwhile is either
    resent or delivered live after them (a change possibly both: whole-state
    frames, so a repeat is harmless).
    """
    settings, hub, store = deps.settings, deps.hub, deps.store
    events = conn.read_only_events.get(room.name, 0)
    presence = await hub.join(conn, room.name)
    # Read after the registration: an archive or unarchive committed since `room` was
    # read shows here, or its `room` event reaches the connection (and is newer).
    last_seq, archived = await store.last_seq_archived(room.id)
    if conn.read_only_events.get(room.name, 0) == events:  # kept current by them once joined
        if archived:
            conn.read_only.add(room.name)
        else:
            conn.read_only.discard(room.name)
    replay = []
    truncated = False
    if since is not None and since < last_seq:
        cap = settings.replay_cap
        replay = await store.messages(room, after=since, upto=last_seq, limit=cap)
        truncated = last_seq - since > cap
    # Read before the changes: every change up to it is resent, replayed or paged.
    changes_version = await store.newest_change_version(room.id)
    changes = None
    if since and changes_after is not None:
        # Exact: every change after the newest version the client saw, to the messages
        # it holds (none past `last_seq` exist).
        upto = min(since, last_seq)
        changes = await store.changes_after(room, changes_after, upto, settings.replay_cap)
    elif since and since <= last_seq:
        # Changes to messages the client holds: none below seq 1, and none to resend for
        # a `since` past `last_seq` (their `at_seq` would be past it: they arrive live).
        changes = await store.changes_since(room, since, settings.replay_cap)
    read_seq, unread = await store.read_state(room.id, conn.user.id)
    if conn.removals.get(room.name, 0) != removals:
        # Removed since the room was read (`removed` is sent): undo the registration, so
        # a room no longer readable is `not_found` and nothing of it is sent.
        await hub.leave(conn, room.name)
        return None
    joined = JoinedFrame(
        room=room.name,
        presence=presence,
        last_seq=last_seq,
        replay_truncated=truncated,
        topic=room.topic,
        archived=room.name in conn.read_only,
        read_seq=read_seq,
        unread=unread,
        changes_truncated=changes is not None and changes.truncated,
        changes_version=changes_version,
        ref=ref,
    )
    conn.push(encode(joined))
    for message in replay:  # waits for the socket rather than overflowing the queue
        if conn.removals.get(room.name, 0) != removals:
            return joined  # removed meanwhile: the hub detached the connection, nothing more
        if conn.claim(room.name, message.seq):
            await conn.put(encode(message))
    for change in changes.frames if changes is not None else ():
        if conn.removals.get(room.name, 0) != removals:
            return joined
        await conn.put(encode(change))
    hub.finish_replay(conn, room.name, last_seq)
    return joined


async def leave(session: CommandContext, frame: LeaveIn) -> None:
    settings = session.settings
    # The join bucket: a join/leave loop pays for both halves.
    await session.rate_limit(
        "join", settings.join_rate, settings.join_burst, frame.ref, "too many join and leave frames"
    )
    if not await session.deps.hub.leave(session.conn, frame.room):
        raise FrameError(ErrorCode.NOT_JOINED, "you have not joined that room", frame.ref)
    session.joined.pop(frame.room, None)
    session.conn.push(encode(LeftFrame(room=frame.room, ref=frame.ref)))
