"""The per-room reorder buffer, alone and inside the hub (no server, no Redis).

Inside the hub: seqs released in order, gaps read back from a room log (the
database in the server, a list here), and each connection given a seq once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from chat.backends.fanout import BrokerUnavailable
from chat.backends.memory_fanout import MemoryBroker
from chat.backends.memory_presence import MemoryPresence
from chat.hub import Connection, Hub, room_channel
from chat.hub.reorder import Reorder
from chat.protocol import MessageFrame, UserRef, encode

Released = list[tuple[str, int, str]]
LOCAL_PRESENCE = partial(MemoryPresence, 0)


def _reorder(window: float = 0.05) -> tuple[Reorder[str], Released]:
    out: Released = []
    return Reorder(lambda room, seq, item: out.append((room, seq, item)), window), out


async def test_early_messages_wait_for_the_missing_seq() -> None:
    r, out = _reorder(window=5)
    r.expect("a", 5)
    r.push("a", 7, "m7")
    r.push("a", 6, "m6")
    assert out == []  # still waiting for 5
    r.push("a", 5, "m5")
    assert [seq for _, seq, _ in out] == [5, 6, 7]
    assert r.next_seq("a") == 8 and r.held("a") == 0
    r.forget("a")


async def test_late_and_duplicate_messages_are_dropped() -> None:
    r, out = _reorder()
    r.expect("a", 1)
    r.push("a", 1, "m1")
    r.push("a", 1, "again")
    r.push("a", 3, "m3")
    r.push("a", 3, "again")
    assert out == [("a", 1, "m1")]
    await asyncio.sleep(0.1)  # 2 never came: given up
    assert out == [("a", 1, "m1"), ("a", 3, "m3")]
    r.push("a", 2, "too late")
    assert len(out) == 2


async def test_messages_before_the_start_are_held_then_trimmed() -> None:
    r, out = _reorder(window=5)
    r.push("a", 3, "m3")
    r.push("a", 4, "m4")
    r.push("a", 2, "m2")
    assert out == []
    r.expect("a", 3)  # the join's replay covers up to 2
    r.expect("a", 1)  # a later, smaller start is ignored
    assert [seq for _, seq, _ in out] == [3, 4]
    r.forget("a")


async def test_rooms_are_independent_and_start_without_expect_after_the_window() -> None:
    r, out = _reorder()
    r.push("a", 10, "a10")
    r.expect("b", 1)
    r.push("b", 1, "b1")
    assert out == [("b", 1, "b1")]
    await asyncio.sleep(0.1)
    assert out[-1] == ("a", 10, "a10")


class ShuffledBroker(MemoryBroker):
    """Delivers room messages in a chosen order, like racing publishers on Redis."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[str, str]] = []
        self.hold = False
        self.down = False

    async def publish(self, channel: str, payload: str) -> None:
        if self.down:
            raise BrokerUnavailable("down")
        if self.hold:
            self.held.append((channel, payload))
            return
        await super().publish(channel, payload)

    async def release(self, seqs: list[int]) -> None:
        """Deliver the held room messages of these seqs, in this order (the others are
        lost); what carries no seq (a presence frame, say) goes first."""
        held, self.held, self.hold = self.held, [], False
        numbered = {}
        for channel, data in held:
            seq = json.loads(data.partition("\n")[0]).get("s")
            if seq is None:
                await super().publish(channel, data)
            else:
                numbered[seq] = (channel, data)
        for seq in seqs:
            await super().publish(*numbered[seq])


class FakeLog:
    """The database's view of rooms: every stored message, by room."""

    def __init__(self) -> None:
        self.rooms: dict[str, list[MessageFrame]] = {}
        self.reads = 0
        self.changes: dict[str, list[Any]] = {}
        self.change_checks = 0
        self.change_reads = 0

    def store(self, room: str) -> MessageFrame:
        log = self.rooms.setdefault(room, [])
        user = UserRef(id=1, name="author", role="user")
        frame = MessageFrame(
            room=room, id=len(log) + 1, seq=len(log) + 1, user=user, body=f"m{len(log) + 1}", ts="t"
        )
        log.append(frame)
        return frame

    async def last_seqs(self, rooms: Sequence[str]) -> dict[str, int]:
        return {room: len(self.rooms[room]) for room in rooms if room in self.rooms}

    async def messages_between(
        self, room: str, after: int, upto: int, limit: int
    ) -> Sequence[MessageFrame]:
        self.reads += 1
        return [m for m in self.rooms.get(room, []) if after < m.seq <= upto][:limit]

    # Changes (edits, ...) by room, as whole-state frames; the hub reads them back too.
    async def newest_change_versions(self, rooms: Sequence[str]) -> dict[str, int]:
        return {room: self.changes[room][-1].version for room in rooms if self.changes.get(room)}

    async def changes_above(self, floors: Mapping[str, int]) -> dict[str, tuple[int, int]]:
        self.change_checks += 1
        out = {}
        for room, floor in floors.items():
            above = [c.version for c in self.changes.get(room, []) if c.version > floor]
            if above:
                out[room] = (max(above), len(above))
        return out

    async def room_changes_after(
        self, room: str, after: int, limit: int
    ) -> tuple[Sequence[Any], int]:
        self.change_reads += 1
        page = [c for c in self.changes.get(room, []) if c.version > after][:limit]
        return page, (page[-1].version if page else 0)


class FakeSink:
    """A socket that takes everything at once and records the seqs written to it."""

    def __init__(self) -> None:
        self.seqs: list[int] = []

    def write(self, messages: Sequence[bytes]) -> None:
        self.seqs.extend(json.loads(m)["seq"] for m in messages)

    def buffered(self) -> int:
        return 0

    async def wait_below(self, limit: int) -> None:
        return None

    def wake(self) -> None:
        return None


async def _conn(hub: Hub, room: str, last_seq: int) -> list[int]:
    """A real `Connection` in `room` (joined at `last_seq`); the seqs it is given."""
    sink = FakeSink()

    async def close(code: int, reason: str) -> None:
        return None

    conn = Connection(UserRef(id=99, name="reader", role="user"), sink, close, 1 << 20)
    await hub.join(conn, room)
    hub.finish_replay(conn, room, last_seq)
    return sink.seqs


async def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.005)


async def test_hub_releases_room_messages_in_seq_order() -> None:
    broker = ShuffledBroker()
    log = FakeLog()
    for _ in range(4):
        log.store("r")
    hub = Hub(broker, LOCAL_PRESENCE, room_log=log, reorder_window=5)
    await hub.start()
    got = await _conn(hub, "r", 4)
    broker.hold = True
    for _ in range(3):
        frame = log.store("r")
        await hub.publish_room("r", encode(frame), seq=frame.seq)
    await broker.release([7, 5, 6])
    await _until(lambda: len(got) == 3)
    assert got == [5, 6, 7]
    await hub.stop()


async def test_a_seq_lost_on_the_broker_is_read_back_from_the_log() -> None:
    broker = ShuffledBroker()
    log = FakeLog()
    hub = Hub(
        broker, partial(MemoryPresence, 0), room_log=log, reorder_window=0.05, gap_check_interval=60
    )
    await hub.start()
    got = await _conn(hub, "r", 0)
    broker.hold = True
    frames = [log.store("r") for _ in range(3)]
    for frame in frames:
        await hub.publish_room("r", encode(frame), seq=frame.seq)
    await broker.release([1, 3])  # seq 2 never arrives
    await _until(lambda: len(got) == 3)
    assert got == [1, 2, 3]
    assert log.reads == 1  # one query for the gap, not one per connection
    await hub.stop()


async def test_catch_up_delivers_the_last_message_without_a_later_one() -> None:
    broker = ShuffledBroker()
    log = FakeLog()
    hub = Hub(broker, LOCAL_PRESENCE, room_log=log, gap_check_interval=60)
    await hub.start()
    got = await _conn(hub, "r", 0)
    log.store("r")  # stored, but its publish was lost: nothing follows it
    await hub.catch_up()
    await _until(lambda: got == [1])
    await hub.stop()


async def test_the_periodic_check_finds_a_message_whose_publisher_died() -> None:
    broker = ShuffledBroker()
    log = FakeLog()
    hub = Hub(broker, LOCAL_PRESENCE, room_log=log, gap_check_interval=0.05)
    await hub.start()
    got = await _conn(hub, "r", 0)
    log.store("r")
    log.store("r")
    await _until(lambda: got == [1, 2])
    await hub.stop()


async def test_a_connection_never_gets_a_seq_twice() -> None:
    """Form 1 of the issue: a join's replay covered seqs the reorder buffer still held."""
    broker = ShuffledBroker()
    log = FakeLog()
    hub = Hub(
        broker, partial(MemoryPresence, 0), room_log=log, reorder_window=0.05, gap_check_interval=60
    )
    await hub.start()
    first_got = await _conn(hub, "r", 0)  # keeps the room watched
    broker.hold = True
    frames = [log.store("r") for _ in range(3)]
    for frame in frames:
        await hub.publish_room("r", encode(frame), seq=frame.seq)
    await broker.release([2, 3])  # 2 and 3 held, waiting for 1 (lost)
    # A client that got 1-3 from its join's replay joins meanwhile.
    got = await _conn(hub, "r", 3)
    frame = log.store("r")
    await hub.publish_room("r", encode(frame), seq=frame.seq)
    # 1 is read back, then 1-4 released in order: the late joiner gets only 4.
    await _until(lambda: first_got == [1, 2, 3, 4])
    await _until(lambda: got == [4])
    await hub.stop()


async def test_hub_delivers_locally_when_the_broker_is_down() -> None:
    broker = ShuffledBroker()
    hub = Hub(broker, LOCAL_PRESENCE)
    await hub.start()
    got = await _conn(hub, "r", 0)
    broker.down = True
    assert not await hub.publish_room("r", json.dumps({"seq": 1}), seq=1)
    await _until(lambda: got == [1])
    assert room_channel("r") in broker._channels
    await hub.stop()
