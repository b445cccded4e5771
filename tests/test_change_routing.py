"""How the hub routes change events (no server, no Redis): one connection left out of
a publish, an event about a message never overtaking that message, and a change
whose event never came read back from the database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from chat.hub import Connection, Hub
from chat.protocol import EditedFrame, ReadFrame, UserRef, encode
from tests.test_reorder import LOCAL_PRESENCE, FakeLog, ShuffledBroker


class Recorder:
    """A socket that takes everything at once and records `(type, seq)` of each frame
    (`(type, version)` of a `changes_checked`)."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, int]] = []

    def write(self, messages: Sequence[bytes]) -> None:
        for raw in messages:
            frame = json.loads(raw)
            self.frames.append((frame["type"], frame.get("seq", frame.get("version"))))

    def buffered(self) -> int:
        return 0

    async def wait_below(self, limit: int) -> None:
        return None

    def wake(self) -> None:
        return None


async def _member(
    hub: Hub, room: str, last_seq: int, user_id: int = 7
) -> tuple[Connection, Recorder]:
    sink = Recorder()

    async def close(code: int, reason: str) -> None:
        return None

    conn = Connection(UserRef(id=user_id, name=f"u{user_id}"), sink, close, 1 << 20)
    await hub.register(conn)
    await hub.join(conn, room)
    hub.finish_replay(conn, room, last_seq)
    return conn, sink


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_change_waits_for_the_message_it_is_about() -> None:
    broker, log = ShuffledBroker(), FakeLog()
    hub = Hub(broker, LOCAL_PRESENCE, room_log=log, reorder_window=5)
    await hub.start()
    _, sink = await _member(hub, "r", 0)
    broker.hold = True
    first, second = log.store("r"), log.store("r")
    for frame in (first, second):
        await hub.publish_room("r", encode(frame), seq=frame.seq)
    edit = EditedFrame(room="r", seq=2, body="fixed", edited_at="t", version=1)
    await hub.publish_room("r", encode(edit), about=2)
    # The edit arrives first, then message 2, then message 1 (racing publishers).
    await broker.release([2, 1])
    await _settle()
    assert sink.frames == [("message", 1), ("message", 2), ("edited", 2)]
    # About a message already released: delivered at once.
    again = EditedFrame(room="r", seq=1, body="also fixed", edited_at="t", version=2)
    await hub.publish_room("r", encode(again), about=1)
    await _settle()
    assert sink.frames[-1] == ("edited", 1)
    await hub.stop()


async def test_one_connection_can_be_left_out_of_a_room_or_user_publish() -> None:
    broker, log = ShuffledBroker(), FakeLog()
    hub = Hub(broker, LOCAL_PRESENCE, room_log=log)
    await hub.start()
    sender, sender_sink = await _member(hub, "r", 0)
    _, other_sink = await _member(hub, "r", 0)  # the same user's second connection
    key = hub.conn_key(sender)
    edit = EditedFrame(room="r", seq=1, body="b", edited_at="t", version=1)
    await hub.publish_room("r", encode(edit), exclude_conn=key)
    await hub.publish_user(7, encode(ReadFrame(room="r", seq=1)), exclude_conn=key)
    await _settle()
    assert other_sink.frames == [("edited", 1), ("read", 1)]
    assert sender_sink.frames == []
    # A key from another process (another node id) leaves nobody out here.
    await hub.publish_user(7, encode(ReadFrame(room="r", seq=2)), exclude_conn=f"x:{sender.id}")
    await _settle()
    assert sender_sink.frames == [("read", 2)]
    await hub.stop()


async def test_a_change_whose_event_never_came_is_read_back_once() -> None:
    broker, log = ShuffledBroker(), FakeLog()
    hub = Hub(broker, LOCAL_PRESENCE, room_log=log, gap_check_interval=60)
    await hub.start()
    first = log.store("r")
    _, sink = await _member(hub, "r", first.seq)
    published = EditedFrame(room="r", seq=1, body="b1", edited_at="t", version=5)
    lost = EditedFrame(room="r", seq=1, body="b2", edited_at="t", version=9)
    log.changes["r"] = [published, lost]
    await hub.publish_room("r", encode(published), about=1, version=5)
    await _settle()
    assert sink.frames == [("edited", 1)]
    # The first check finds the room behind (the event may be in flight): it waits.
    await hub.catch_up_changes()
    assert sink.frames == [("edited", 1)] and log.change_reads == 0
    # Still behind at the second: read back and delivered, the delivered one not again;
    # then the room's members learn that every change up to 9 has reached them.
    await hub.catch_up_changes()
    await _settle()
    assert sink.frames == [("edited", 1), ("edited", 1), ("changes_checked", 9)]
    assert log.change_reads >= 1
    reads = log.change_reads
    # Caught up: one cheap check per round, nothing read, nothing sent.
    for _ in range(3):
        await hub.catch_up_changes()
    await _settle()
    assert len(sink.frames) == 3 and log.change_reads == reads
    # An event in flight at one check and delivered before the next is not read back.
    late = EditedFrame(room="r", seq=1, body="b3", edited_at="t", version=12)
    log.changes["r"].append(late)
    await hub.catch_up_changes()
    await hub.publish_room("r", encode(late), about=1, version=12)
    await _settle()
    await hub.catch_up_changes()
    await hub.catch_up_changes()
    await _settle()
    assert sink.frames[3:] == [("edited", 1), ("changes_checked", 12)]
    assert log.change_reads == reads
    await hub.stop()


async def test_the_checked_version_never_passes_a_change_still_on_its_way() -> None:
    """An event that overtook an older one: `changes_checked` stays below the older one
    until it has been delivered, so a client resuming from it gets that change."""
    broker, log = ShuffledBroker(), FakeLog()
    hub = Hub(broker, LOCAL_PRESENCE, room_log=log, reorder=False, gap_check_interval=60)
    await hub.start()
    first = log.store("r")
    _, sink = await _member(hub, "r", first.seq)
    lost = EditedFrame(room="r", seq=1, body="b1", edited_at="t", version=10)
    overtaking = EditedFrame(room="r", seq=1, body="b2", edited_at="t", version=12)
    log.changes["r"] = [lost, overtaking]
    await hub.publish_room("r", encode(overtaking), about=1, version=12)
    for _ in range(3):  # checks before the lost one is read back: nothing is confirmed
        await hub.catch_up_changes()
        await _settle()
        if len(sink.frames) > 1:
            break
    assert sink.frames[0] == ("edited", 1)
    assert sink.frames[1:] == [("edited", 1), ("changes_checked", 12)]
    await hub.stop()
