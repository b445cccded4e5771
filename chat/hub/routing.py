"""Connections, rooms and fan-out. Transport-agnostic: no SQLAlchemy, JWT or Redis here.

Every event is encoded once and published to the broker on a channel
(`room:<name>`, `user:<id>` or `admins`) with a one-line header; each process
delivers it to its local connections by putting the same string on each
connection's bounded queue. Fan-out never awaits a socket: a connection whose
queue is full is closed (4008) and resumes with `join ... since`.

Room and user events that change what a connection may do carry a header the
hub acts on before delivering: `ro` (a room's archived flag, for the cheap check
of sends), `remove` (the user was removed from a room: their connections leave
it at once) and `profile` (the user's new `UserRef`, for their next frames).

Exactly once per connection: each connection remembers, per joined room, the
highest seq it has been given; a room message at or below it is dropped before
it is queued, whether it comes from a join's replay, the reorder buffer, a gap
fill or live delivery.

No silent gaps across processes (with a `RoomLog`, i.e. Redis): a seq missing
from the broker's stream is read back from the database, once per room and gap,
when the reorder window passes, when the broker's subscription reconnects, and
by a periodic check (for a publisher that died between commit and publish).
A change event (edit, delete, reaction) names the message it is about and waits
for that message here, so a member never gets a change before its message.
Change events lost the same way (a process that died between commit and publish,
a broker outage) are read back too: per watched room the hub knows every change
version delivered here, and the same checks compare that with the database's
changes above the last verified version, resending the missing ones' whole state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from chat.backends.fanout import Broker, BrokerUnavailable
from chat.backends.presence import PresenceFactory, PresenceStore
from chat.hub.connection import Connection
from chat.hub.reorder import Reorder
from chat.monitoring import metrics
from chat.protocol import (
    ChangesCheckedFrame,
    DeletedFrame,
    EditedFrame,
    MessageFrame,
    PresenceChangesFrame,
    PresenceFrame,
    ReactionFrame,
    UserRef,
    encode,
)

log = logging.getLogger(__name__)

ADMINS = "admins"
# Every room's presence changes, for admin consoles that `watch` presence site-wide.
PRESENCE = "presence"
FILL_PAGE = 500  # messages read per query when filling a gap
# A room's presence changes of one tick go out as `presence` frames up to this many,
# as one `presence_changes` frame beyond (a burst of joins costs a frame per member).
PRESENCE_SINGLES_MAX = 3

ChangeFrame = EditedFrame | DeletedFrame | ReactionFrame


class RoomLog(Protocol):
    """What the hub reads back from the database to fill gaps in a room's stream."""

    async def last_seqs(self, rooms: Sequence[str]) -> dict[str, int]:
        """Each named room's newest seq (rooms that do not exist are left out)."""

    async def messages_between(
        self, room: str, after: int, upto: int, limit: int
    ) -> Sequence[MessageFrame]:
        """The room's messages with `after` < seq <= `upto`, oldest first, at most `limit`."""

    async def newest_change_versions(self, rooms: Sequence[str]) -> dict[str, int]:
        """Each named room's newest change version (rooms without changes left out)."""

    async def changes_above(self, floors: Mapping[str, int]) -> dict[str, tuple[int, int]]:
        """`{room: (newest version, how many)}` of each room's changes above its floor."""

    async def room_changes_after(
        self, room: str, after: int, limit: int
    ) -> tuple[Sequence[ChangeFrame], int]:
        """Whole-state frames of the room's changes with a version above `after`, oldest
        first, at most `limit`; and the newest version read (0: none)."""


def room_channel(room: str) -> str:
    return f"room:{room}"


def user_channel(user_id: int) -> str:
    return f"user:{user_id}"


class Hub:
    """Routes events between the broker and local connections."""

    def __init__(
        self,
        broker: Broker,
        presence: PresenceFactory,
        *,
        room_log: RoomLog | None = None,
        reorder: bool = True,
        reorder_window: float = 0.25,
        gap_check_interval: float = 2.0,
        presence_tick: float = 0.05,
    ) -> None:
        """`room_log` (the database) turns on the checks of missed changes and, with
        `reorder`, reordering and gap filling of messages.

        `presence` builds the presence store (memory or Redis) given the hub's
        change callback.

        Every `gap_check_interval` seconds each watched room's change versions in
        the database are compared with those delivered here; what is missing is
        resent, and the room's connections are told how far every change has
        reached them (`changes_checked`).

        With several processes publishing to one room (a Redis broker), room
        messages can reach this process out of seq order, or not at all: with
        `reorder`, they are released in seq order per room (see
        `chat.hub.reorder`), and a seq still missing `reorder_window` seconds later
        is read from the database; every `gap_check_interval` seconds, and
        whenever the broker resubscribes, each watched room's newest seq is
        compared with the last one delivered here.
        """
        self.broker = broker
        self._log = room_log
        self._gap_check_interval = gap_check_interval
        self._reorder: Reorder[tuple[str, int | None]] | None = (
            Reorder(self._release_room, reorder_window, on_gap=self._on_gap)
            if room_log is not None and reorder
            else None
        )
        self._room_ready: dict[str, asyncio.Future[None]] = {}
        # Per room, change events (edits, ...) about a message not yet released
        # here, held until it is: `(message seq, payload, connection to skip)`.
        self._held_changes: dict[str, list[tuple[int, str, int | None]]] = {}
        self._fill_locks: dict[str, asyncio.Lock] = {}
        # Per watched room, the change versions delivered here: every one up to
        # `_changes_verified` (checked against the database), and those above it in
        # `_changes_seen`. A room is in `_changes_seen` while it is watched.
        self._changes_verified: dict[str, int] = {}
        self._changes_seen: dict[str, set[int]] = {}
        # Rooms found behind by a check, with the floor then: read back at the next
        # check if still behind (by then an event merely in flight has arrived).
        self._changes_behind: dict[str, int] = {}
        self._changes_lock = asyncio.Lock()  # one check of changes at a time
        self._resync_listeners: list[Callable[[float], Awaitable[None]]] = []
        self._admins_listeners: list[Callable[[], None]] = []
        # Presence changes wait `presence_tick` and go out together, per room.
        self._presence_tick = presence_tick
        self._presence_changes: dict[str, dict[int, tuple[str, UserRef]]] = {}
        self._presence_flush: asyncio.TimerHandle | None = None
        self.presence_store: PresenceStore = presence(self._presence_changed)
        self.connections: set[Connection] = set()
        self._by_user: dict[int, set[Connection]] = defaultdict(set)
        self._by_room: dict[str, set[Connection]] = defaultdict(set)
        # Connections watching every room's presence; a list buffers what arrives
        # while the watch's snapshot is read (as a join buffers during its replay).
        self._presence_watchers: dict[Connection, list[bytes] | None] = {}
        self._background: set[asyncio.Future[object]] = set()
        self.halting = False
        # Connection ids count per process: with this prefix a key names one
        # connection on the whole site (`exclude_conn`).
        self.node = secrets.token_hex(6)

    @property
    def rooms_active(self) -> int:
        """Rooms with at least one member connected to this process."""
        return len(self._by_room)

    def conn_key(self, conn: Connection) -> str:
        """A key naming `conn` on every process, for `exclude_conn`."""
        return f"{self.node}:{conn.id}"

    def _local_conn(self, key: object) -> int | None:
        """The id of the local connection a `conn_key` names (None: another process's)."""
        if not isinstance(key, str):
            return None
        node, _, conn_id = key.partition(":")
        return int(conn_id) if node == self.node else None

    async def start(self) -> None:
        await self.broker.start(self._dispatch, on_resubscribed=self._on_resubscribed)
        await self.broker.subscribe(ADMINS)
        await self.presence_store.start()
        if self._log is not None:
            self._spawn(self._check_gaps_forever())

    def on_admins_event(self, listener: Callable[[], None]) -> None:
        """Call `listener()` for every event on the `admins` channel, from any process
        (task frames, alerts): for caches of what those events change."""
        self._admins_listeners.append(listener)

    def on_resync(self, listener: Callable[[float], Awaitable[None]]) -> None:
        """Call `listener(lost_at)` after the broker resubscribed following an outage.

        For whole-state frames (tasks) that the outage may have swallowed: the
        listener re-sends what changed since `lost_at` (a wall-clock time) to
        this process's own connections.
        """
        self._resync_listeners.append(listener)

    async def drain(self, code: int, reason: str, timeout: float) -> int:
        """Ask every connection to finish its frame, flush and close; wait up to `timeout`.

        Returns how many connections were still open at the deadline (those
        are closed at once, their unsent frames dropped).
        """
        deadline = asyncio.get_running_loop().time() + timeout
        self.halting = True
        for conn in list(self.connections):
            conn.stop_reading()
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        left = len(self.connections)
        for conn in list(self.connections):
            conn.abort(code, reason)
        return left

    async def stop(self) -> None:
        await self.presence_store.stop()
        if self._presence_flush is not None:
            self._presence_flush.cancel()
        for task in list(self._background):
            task.cancel()
        await self.broker.stop()

    # --- membership -------------------------------------------------------

    async def register(self, conn: Connection) -> None:
        self.connections.add(conn)
        first = not self._by_user[conn.user.id]
        self._by_user[conn.user.id].add(conn)
        metrics.CONNECTIONS.inc()
        if self.halting:
            conn.stop_reading()
        if first:
            await self.broker.subscribe(user_channel(conn.user.id))

    async def unregister(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        conn.discard()
        metrics.CONNECTIONS.dec()
        await self.unwatch_presence(conn)
        for room in list(conn.rooms):
            await self.leave(conn, room)
        users = self._by_user.get(conn.user.id)
        if users is not None:
            users.discard(conn)
            if not users:
                del self._by_user[conn.user.id]
                await self.broker.unsubscribe(user_channel(conn.user.id))

    async def join(self, conn: Connection, room: str) -> list[UserRef]:
        """Add `conn` to `room`, buffering live events until `finish_replay`."""
        already = room in conn.rooms
        conn.rooms[room] = []
        if not already:
            self._by_room[room].add(conn)
            await self._watch_room(room)
            await self.presence_store.add(room, conn.id, conn.user)
        return await self.presence_store.members(room)

    def finish_replay(self, conn: Connection, room: str, last_seq: int) -> None:
        """End the join: deliver events buffered meanwhile, skipping seqs up to `last_seq`.

        Everything up to `last_seq` (the `joined` frame's) was replayed or is
        for the client to page, so the connection counts it as given.
        """
        buffered = conn.rooms.get(room)
        if buffered is None:
            return
        conn.rooms[room] = None
        conn.seen[room] = max(conn.seen.get(room, 0), last_seq)
        for seq, payload in buffered:
            if seq is None:
                conn.push(payload)
            else:
                conn.push_seq(room, seq, payload.encode())

    async def watch_presence(self, conn: Connection) -> dict[str, list[UserRef]]:
        """Give `conn` every room's presence changes from now on; returns the snapshot to
        send it first. Changes are held until `finish_watch`, so none is lost or comes
        before the snapshot (one both in the snapshot and after it is harmless: a join
        of a present user, a leave of an absent one)."""
        if conn in self._presence_watchers:
            return await self.presence_store.snapshot()
        first = not self._presence_watchers
        self._presence_watchers[conn] = []
        if first:
            await self.broker.subscribe(PRESENCE)
        return await self.presence_store.snapshot()

    def finish_watch(self, conn: Connection, snapshot: str) -> None:
        """Send the snapshot frame, then the changes held since `watch_presence`."""
        held = self._presence_watchers.get(conn)
        if held is None and conn not in self._presence_watchers:
            return  # unregistered meanwhile
        conn.push(snapshot)
        self._presence_watchers[conn] = None
        for data in held or ():
            conn.push_bytes(data)

    async def unwatch_presence(self, conn: Connection) -> None:
        if self._presence_watchers.pop(conn, False) is not False and not self._presence_watchers:
            await self.broker.unsubscribe(PRESENCE)

    async def leave(self, conn: Connection, room: str) -> bool:
        """Remove `conn` from `room`; False when it had not joined."""
        if not self._detach(conn, room):
            return False
        await self._forget_if_unwatched(conn, room)
        return True

    def _detach(self, conn: Connection, room: str) -> bool:
        """Stop delivering `room` to `conn`, at once (no await); False if it had not joined."""
        if room not in conn.rooms:
            return False
        del conn.rooms[room]
        conn.seen.pop(room, None)
        conn.read_only.discard(room)
        members = self._by_room.get(room)
        if members is not None:
            members.discard(conn)
        return True

    async def _forget_if_unwatched(self, conn: Connection, room: str) -> None:
        """After `_detach`: the presence change, and the room's channel when no local
        connection listens any more."""
        members = self._by_room.get(room)
        if members is not None and not members:
            del self._by_room[room]
            self._room_ready.pop(room, None)
            self._fill_locks.pop(room, None)
            self._held_changes.pop(room, None)
            self._changes_verified.pop(room, None)
            self._changes_seen.pop(room, None)
            self._changes_behind.pop(room, None)
            if self._reorder is not None:
                self._reorder.forget(room)
            await self.broker.unsubscribe(room_channel(room))
        await self.presence_store.remove(room, conn.id, conn.user)

    async def _watch_room(self, room: str) -> None:
        """Subscribe to the room's channel for its first local listener; others wait for it.

        Returns once live messages flow: a `last_seq` read after this returns
        is covered by either the join's replay or live delivery.
        """
        ready = self._room_ready.get(room)
        if ready is not None:
            await asyncio.shield(ready)
            return
        ready = self._room_ready[room] = asyncio.get_running_loop().create_future()
        if self._log is not None:
            self._changes_seen[room] = set()  # versions published from now on
        try:
            await self.broker.subscribe(room_channel(room))
            if self._reorder is not None and self._log is not None:
                try:
                    last = await self._log.last_seqs([room])
                    self._reorder.expect(room, last.get(room, 0) + 1)
                except Exception:  # the reorder window then picks the start
                    log.exception("reading the last seq of room %r failed", room)
            if self._log is not None:
                try:
                    # Read after subscribing: a later change's event arrives, or is
                    # read back by the checks.
                    versions = await self._log.newest_change_versions([room])
                    if room in self._changes_seen:
                        self._changes_verified[room] = versions.get(room, 0)
                except Exception:  # the next check starts from the newest then
                    log.exception("reading the change version of room %r failed", room)
        finally:
            if not ready.done():
                ready.set_result(None)

    # --- publishing -------------------------------------------------------

    async def publish_room(
        self,
        room: str,
        payload: str,
        *,
        seq: int | None = None,
        exclude_user: int | None = None,
        exclude_conn: str | None = None,
        about: int | None = None,
        version: int | None = None,
    ) -> bool:
        """Publish to the room's members on every process, except the user
        `exclude_user` and the connection `exclude_conn` (a `conn_key`: the
        caller answers that one itself, with its `ref`). `about`: the seq of the
        message a change event is about; a process still holding that message
        in its reorder buffer holds the event too, so it never overtakes it.
        `version`: a change event's version, so every process notes it as delivered
        (one it never receives is read back from the database)."""
        if room in self._presence_changes:  # who joined goes out before what they do
            await self._announce_presence(room)
        return await self._publish(
            room_channel(room), payload, s=seq, x=exclude_user, c=exclude_conn, m=about, v=version
        )

    async def publish_messages(self, messages: Sequence[tuple[str, int, str]]) -> bool:
        """Publish stored room messages `(room, seq, payload)`, in order, together."""
        if self._presence_changes:
            for room in {room for room, _, _ in messages} & self._presence_changes.keys():
                await self._announce_presence(room)
        items = [
            (room_channel(room), f'{{"s":{seq}}}\n{payload}') for room, seq, payload in messages
        ]
        try:
            await self.broker.publish_many(items)
        except BrokerUnavailable as exc:
            log.warning("broker unavailable (%s): %d messages delivered here only", exc, len(items))
            for channel, data in items:
                self._dispatch(channel, data)
            return False
        return True

    async def publish_user(
        self, user_id: int, payload: str, *, exclude_conn: str | None = None
    ) -> bool:
        """Publish to every connection of the user, except `exclude_conn` (a `conn_key`)."""
        return await self._publish(user_channel(user_id), payload, c=exclude_conn)

    async def publish_admins(self, payload: str) -> bool:
        return await self._publish(ADMINS, payload)

    async def close_user(self, user_id: int, code: int, reason: str) -> None:
        """Close every connection of a user, on every process."""
        await self._publish(user_channel(user_id), "", close=code, reason=reason)

    async def remove_user_from_room(self, user_id: int, room: str, payload: str) -> bool:
        """On every process: `payload` (the `removed` frame) to every connection of the
        user, and those that joined `room` leave it before anything more of it is sent."""
        return await self._publish(user_channel(user_id), payload, remove=room)

    async def publish_room_settings(self, room: str, payload: str, *, archived: bool) -> bool:
        """Publish the room's `room` frame; connections note whether it is read-only."""
        return await self._publish(room_channel(room), payload, ro=archived)

    async def update_user(self, user: UserRef) -> bool:
        """On every process: the user's connections carry `user` (a new display name)
        in the frames they send from now on."""
        return await self._publish(user_channel(user.id), user.model_dump_json(), profile=True)

    async def _publish(self, channel: str, payload: str, **header: Any) -> bool:
        """Publish to every process; False when the broker refused (delivered here only)."""
        head = json.dumps({k: v for k, v in header.items() if v is not None})
        data = f"{head}\n{payload}"
        try:
            await self.broker.publish(channel, data)
        except BrokerUnavailable as exc:
            # Stored already (for messages): other processes read it back (`catch_up`).
            log.warning("broker unavailable (%s): delivering on %s locally only", exc, channel)
            self._dispatch(channel, data)
            return False
        return True

    def _dispatch(self, channel: str, data: str) -> None:
        head, _, payload = data.partition("\n")
        header: dict[str, Any] = json.loads(head)
        kind, _, key = channel.partition(":")
        if kind == "room":
            if "ro" in header:
                self._mark_read_only(key, bool(header["ro"]))
            seq = header.get("s")
            if self._reorder is not None and seq is not None:
                if key in self._room_ready:  # else no local listener: nothing to order
                    self._reorder.push(key, int(seq), (payload, header.get("x")))
            else:
                skip = self._local_conn(header.get("c"))
                about = header.get("m")
                if "v" in header:
                    self._note_change(key, int(header["v"]))
                if about is not None and self._not_released(key, int(about)):
                    self._held_changes.setdefault(key, []).append((int(about), payload, skip))
                else:
                    self._deliver_room(key, payload, seq, header.get("x"), skip)
        elif kind == "user":
            targets = self._by_user.get(int(key), set())
            if "profile" in header:
                self._set_user(targets, UserRef.model_validate_json(payload))
                return
            encoded = payload.encode()
            skip = self._local_conn(header.get("c"))
            for conn in list(targets):
                if conn.id == skip:
                    continue
                if "close" in header:
                    conn.abort(int(header["close"]), str(header.get("reason", "")))
                    continue
                if "remove" in header:
                    self._evict(conn, str(header["remove"]))
                conn.push_bytes(encoded)
        elif channel == PRESENCE:
            encoded = payload.encode()
            for conn, held in self._presence_watchers.items():
                if held is None:
                    conn.push_bytes(encoded)
                else:
                    held.append(encoded)
        elif channel == ADMINS:
            for listener in self._admins_listeners:
                listener()
            encoded = payload.encode()
            for conn in self.connections:
                if conn.user.role == "admin":
                    conn.push_bytes(encoded)

    def _mark_read_only(self, room: str, archived: bool) -> None:
        for conn in self._by_room.get(room, ()):
            conn.read_only_events[room] = conn.read_only_events.get(room, 0) + 1
            if archived:
                conn.read_only.add(room)
            else:
                conn.read_only.discard(room)

    def _evict(self, conn: Connection, room: str) -> None:
        """`conn` leaves `room` now (nothing more of it is delivered); presence and the
        room's channel follow in the background."""
        conn.removals[room] = conn.removals.get(room, 0) + 1  # for a join in progress
        if self._detach(conn, room):
            self._spawn(self._forget_if_unwatched(conn, room))

    @staticmethod
    def _set_user(targets: set[Connection], user: UserRef) -> None:
        for conn in targets:
            conn.user = user

    def _release_room(self, room: str, seq: int, item: tuple[str, int | None]) -> None:
        self._deliver_room(room, item[0], seq, item[1])
        if room in self._held_changes:
            self._release_changes(room)

    def _not_released(self, room: str, seq: int) -> bool:
        """Whether the room's message `seq` is yet to leave this process's reorder buffer."""
        if self._reorder is None or room not in self._room_ready:
            return False
        next_seq = self._reorder.next_seq(room)
        return next_seq is not None and seq >= next_seq

    def _release_changes(self, room: str) -> None:
        """Deliver the held change events whose message has been released (or given up)."""
        held = self._held_changes.pop(room, [])
        waiting = []
        for about, payload, skip in held:
            if self._not_released(room, about):
                waiting.append((about, payload, skip))
            else:
                self._deliver_room(room, payload, None, None, skip)
        if waiting:
            self._held_changes[room] = waiting

    def _deliver_room(
        self,
        room: str,
        payload: str,
        seq: int | None,
        exclude: int | None,
        skip_conn: int | None = None,
    ) -> None:
        data = payload.encode()  # once, for every local member
        for conn in self._by_room.get(room, ()):
            if conn.user.id == exclude or conn.id == skip_conn:
                continue
            buffered = conn.rooms.get(room)
            if buffered is not None:
                buffered.append((seq, payload))
            elif seq is None:
                conn.push_bytes(data)
            else:
                conn.push_seq(room, seq, data)

    # --- gaps -----------------------------------------------------------------

    def _on_gap(self, room: str, first: int, last: int) -> None:
        """The reorder window passed with seqs `first`..`last` missing: read them back."""
        self._spawn(self._fill_then_release(room, last))

    async def _fill_then_release(self, room: str, last: int) -> None:
        assert self._reorder is not None
        try:
            await self._fill(room, last)
        finally:
            self._reorder.gap_filled(room, last)
            self._release_changes(room)  # those about seqs given up

    async def _fill(self, room: str, last: int) -> None:
        """Read the room's messages from the next expected seq up to `last` into the reorder.

        One query per page; the lock keeps concurrent fills of a room from
        reading the same rows twice. Fails quietly: the reorder buffer then
        gives the seqs up (clients page them) rather than holding the room.
        """
        assert self._reorder is not None and self._log is not None
        lock = self._fill_locks.setdefault(room, asyncio.Lock())
        async with lock:
            while room in self._room_ready:
                first = self._reorder.next_seq(room)
                if first is None or first > last:
                    return
                try:
                    page = await self._log.messages_between(room, first - 1, last, FILL_PAGE)
                except Exception as exc:
                    log.warning("filling seqs %d-%d of room %r failed: %r", first, last, room, exc)
                    return
                if room not in self._room_ready:  # the last local listener left meanwhile
                    return
                metrics.GAP_FILLS.inc(len(page))
                for frame in page:
                    self._reorder.push(room, frame.seq, (encode(frame), None))
                if len(page) < FILL_PAGE:
                    return

    async def catch_up(self) -> None:
        """Compare every watched room's newest seq with this process's; fill what is missing."""
        if self._reorder is None or self._log is None:
            return
        rooms = [room for room in self._room_ready if self._reorder.next_seq(room) is not None]
        for start in range(0, len(rooms), FILL_PAGE):
            last_seqs = await self._log.last_seqs(rooms[start : start + FILL_PAGE])
            for room, last in last_seqs.items():
                expected = self._reorder.next_seq(room)
                if expected is not None and last >= expected:
                    log.info("room %r: seqs %d-%d missed live, reading them", room, expected, last)
                    await self._fill(room, last)

    # --- missed changes ----------------------------------------------------------

    def _note_change(self, room: str, version: int) -> None:
        """The change `version` of `room` is delivered here (or held for its message)."""
        seen = self._changes_seen.get(room)
        if seen is not None and version > self._changes_verified.get(room, 0):
            seen.add(version)

    def _verified(self, room: str, upto: int) -> None:
        """Every change of `room` up to `upto` is delivered here: the room's connections
        are told (`changes_checked`), as that, not the newest version they saw, is where
        a resume must start."""
        if room not in self._changes_seen:
            return
        before = self._changes_verified.get(room)
        self._changes_verified[room] = max(before or 0, upto)
        if before is not None and upto > before:
            checked = ChangesCheckedFrame(room=room, version=upto)
            self._deliver_room(room, encode(checked), None, None)
        self._changes_behind.pop(room, None)
        self._changes_seen[room] = {v for v in self._changes_seen[room] if v > upto}

    async def catch_up_changes(self) -> None:
        """Compare, for every watched room, the changes the database has above the
        verified version with those delivered here; resend the whole state of those
        missing. One query per `FILL_PAGE` rooms when nothing is missing; a room is read
        back when a second check finds it still behind (not for an event in flight)."""
        if self._log is None:
            return
        async with self._changes_lock:
            rooms = list(self._changes_seen)
            for start in range(0, len(rooms), FILL_PAGE):
                part = rooms[start : start + FILL_PAGE]
                unknown = [room for room in part if room not in self._changes_verified]
                if unknown:  # the read at the watch failed: start from the newest
                    newest = await self._log.newest_change_versions(unknown)
                    for room in unknown:
                        self._verified(room, newest.get(room, 0))
                floors = {
                    room: self._changes_verified[room]
                    for room in part
                    if room in self._changes_verified
                }
                above = await self._log.changes_above(floors)
                for room, (newest_version, count) in above.items():
                    seen = self._changes_seen.get(room)
                    if seen is None or self._changes_verified.get(room) != floors.get(room):
                        continue  # left meanwhile
                    if sum(1 for v in seen if v <= newest_version) == count:
                        self._verified(room, newest_version)
                    elif self._changes_behind.get(room) == floors[room]:
                        await self._resend_changes(room, floors[room])
                    else:
                        self._changes_behind[room] = floors[room]

    async def _resend_changes(self, room: str, after: int) -> None:
        """Deliver the whole state of the room's changes above `after` not delivered
        here yet (clients keep the higher version of a repeat), page by page."""
        assert self._log is not None
        while room in self._changes_seen:
            frames, last = await self._log.room_changes_after(room, after, FILL_PAGE)
            seen = self._changes_seen.get(room)
            if seen is None or last <= after:
                return
            for frame in frames:
                if frame.version in seen:
                    continue
                log.info("room %r: change %d missed live, resending it", room, frame.version)
                payload = encode(frame)
                if self._not_released(room, frame.seq):
                    self._held_changes.setdefault(room, []).append((frame.seq, payload, None))
                else:
                    self._deliver_room(room, payload, None, None)
            self._verified(room, last)
            after = last  # until a page reads nothing (frames skip purged messages)

    async def _check_gaps_forever(self) -> None:
        while True:
            await asyncio.sleep(self._gap_check_interval)
            try:
                await self.catch_up()
            except Exception as exc:  # the database may be down: try again next time
                log.warning("checking rooms for missed messages failed: %r", exc)
            try:
                await self.catch_up_changes()
            except Exception as exc:
                log.warning("checking rooms for missed changes failed: %r", exc)

    def _on_resubscribed(self, lost_at: float) -> None:
        """The broker is back after an outage: what was published meanwhile never came."""
        self._spawn(self._resync(lost_at))

    async def _resync(self, lost_at: float) -> None:
        try:
            await self.catch_up()
        except Exception as exc:
            log.warning("catching up after a broker outage failed: %r", exc)
        try:
            await self.catch_up_changes()
        except Exception as exc:
            log.warning("catching up changes after a broker outage failed: %r", exc)
        for listener in self._resync_listeners:
            try:
                await listener(lost_at)
            except Exception:
                log.exception("resync after a broker outage failed")

    def _spawn(self, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _presence_changed(self, room: str, event: str, user: UserRef) -> None:
        """Gather the room's changes for one tick: a join and a leave of one user cancel."""
        changes = self._presence_changes.setdefault(room, {})
        earlier = changes.pop(user.id, None)
        if earlier is None or earlier[0] == event:
            changes[user.id] = (event, user)
        if self._presence_flush is None:
            self._presence_flush = asyncio.get_running_loop().call_later(
                self._presence_tick, self._flush_presence
            )

    def _flush_presence(self) -> None:
        self._presence_flush = None
        for room in list(self._presence_changes):
            self._spawn(self._announce_presence(room))

    async def _announce_presence(self, room: str) -> None:
        """Announce the room's pending changes: a frame each when few, else one frame."""
        changes = self._presence_changes.pop(room, None)
        if not changes:
            return
        joined = [user for event, user in changes.values() if event == "join"]
        left = [user for event, user in changes.values() if event == "leave"]
        batch = encode(PresenceChangesFrame(room=room, joined=joined, left=left))
        # Watching consoles get one frame per room and tick, in the same round trip.
        items = [(PRESENCE, f"{{}}\n{batch}")]
        if len(changes) <= PRESENCE_SINGLES_MAX:  # few: the contract's `presence` frames
            for user_id, (event, user) in changes.items():
                frame = PresenceFrame(room=room, event=event, user=user)  # type: ignore[arg-type]
                # The user's own connections know already: `joined` lists them.
                head = json.dumps({"x": user_id})
                items.append((room_channel(room), f"{head}\n{encode(frame)}"))
        else:
            items.append((room_channel(room), f"{{}}\n{batch}"))
        await self._publish_many(items)

    async def _publish_many(self, items: list[tuple[str, str]]) -> bool:
        """Publish `(channel, header + payload)` pairs together; locally when refused."""
        try:
            await self.broker.publish_many(items)
        except BrokerUnavailable as exc:
            log.warning("broker unavailable (%s): %d events delivered here only", exc, len(items))
            for channel, data in items:
                self._dispatch(channel, data)
            return False
        return True

    async def presence_snapshot(self) -> dict[str, list[UserRef]]:
        """Every room with its present users, as the presence store sees it."""
        return await self.presence_store.snapshot()
