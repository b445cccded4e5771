"""The per-room reorder buffer, alone and inside the hub (no server, no Redis)."""

from __future__ import annotations

import asyncio
import json

from chat.broker import BrokerUnavailable, MemoryBroker
from chat.hub import Hub, room_channel
from chat.reorder import Reorder

Released = list[tuple[str, int, str]]


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

    async def release(self, order: list[int]) -> None:
        held, self.held, self.hold = self.held, [], False
        for i in order:
            await super().publish(*held[i])


class FakeConn:
    """Enough of `Connection` for the hub's room delivery."""

    _next = iter(range(1, 1000))

    def __init__(self) -> None:
        from chat.protocol import UserRef

        self.id = next(self._next)
        self.user = UserRef(id=self.id, name=f"u{self.id}", role="user")
        self.rooms: dict[str, list[tuple[int | None, str]] | None] = {}
        self.frames: list[str] = []

    def push(self, payload: str) -> None:
        self.frames.append(payload)


async def test_hub_releases_room_messages_in_seq_order() -> None:
    broker = ShuffledBroker()
    last = {"r": 4}

    async def room_seq(room: str) -> int:
        return last[room]

    hub = Hub(broker, 0, room_seq=room_seq, reorder_window=5)
    await hub.start()
    conn = FakeConn()
    await hub.join(conn, "r")  # type: ignore[arg-type]
    hub.finish_replay(conn, "r", 4)  # type: ignore[arg-type]
    broker.hold = True
    for seq in (5, 6, 7):
        await hub.publish_room("r", json.dumps({"seq": seq}), seq=seq)
    await hub.publish_room("r", "typing", exclude_user=None)  # no seq: not ordered
    await broker.release([2, 3, 0, 1])
    assert conn.frames == ["typing", *(json.dumps({"seq": s}) for s in (5, 6, 7))]
    await hub.stop()


async def test_hub_delivers_locally_when_the_broker_is_down() -> None:
    broker = ShuffledBroker()
    hub = Hub(broker, 0)
    await hub.start()
    conn = FakeConn()
    await hub.join(conn, "r")  # type: ignore[arg-type]
    hub.finish_replay(conn, "r", 0)  # type: ignore[arg-type]
    broker.down = True
    await hub.publish_room("r", "stored, published nowhere", seq=1)
    assert conn.frames == ["stored, published nowhere"]
    assert room_channel("r") in broker._channels
    await hub.stop()
