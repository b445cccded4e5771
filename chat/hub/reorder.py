"""A per-room reorder buffer: room messages leave in seq order even when processes race.

Why it is needed: the database hands out a room's seqs in commit order, but
each process publishes its own messages, after its commit, on its own Redis
connection. Server A can commit seq 5, server B commit seq 6, and B's publish
reach Redis first. Every receiving process would then deliver 6 before 5.

So each process releases a room's numbered messages strictly in seq order:
- a message ahead of the next expected seq waits (at most `window` seconds)
  for the missing ones;
- a seq still missing after the window was lost live (its publisher died
  between commit and publish, Redis refused the publish, or this process's
  listener was reconnecting). With `on_gap`, the owner is asked to fetch the
  missing seqs (the hub reads them from the database and pushes them here)
  and calls `gap_filled`; only seqs still missing then are given up, and
  delivery goes on (clients see the jump and page the history);
- a message that turns up after its seq was passed (or twice) is dropped.

Why a missing seq can always be read back: seqs are handed out by a row
update in the same transaction as the insert, so seq n+1 cannot commit
before seq n has (or has rolled back, giving n back).

Where a room starts is set with `expect` (the room's last seq, read from the
database after the channel's subscription took effect, plus one). Messages
that arrive before that are held; those below the start are dropped then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from prometheus_client import Counter

T = TypeVar("T")

HELD = Counter("chat_reorder_held_total", "Room messages that arrived early and waited")
SKIPPED = Counter("chat_reorder_skipped_total", "Seqs given up after the reorder window")
DROPPED = Counter("chat_reorder_dropped_total", "Room messages that arrived after their turn")


class _Room(Generic[T]):
    __slots__ = ("filling", "next", "pending", "timer")

    def __init__(self) -> None:
        self.next: int | None = None
        self.pending: dict[int, T] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.filling = False  # `on_gap` was called and `gap_filled` not yet


class Reorder(Generic[T]):
    """Releases `(room, seq, item)` to `release` in seq order per room."""

    def __init__(
        self,
        release: Callable[[str, int, T], None],
        window: float,
        max_pending: int = 10_000,
        on_gap: Callable[[str, int, int], None] | None = None,
    ) -> None:
        """`on_gap(room, first, last)`: seqs first..last are still missing after the window."""
        self._release = release
        self._on_gap = on_gap
        self._window = window
        self._max_pending = max_pending
        self._rooms: dict[str, _Room[T]] = {}

    def expect(self, room: str, next_seq: int) -> None:
        """Start `room` at `next_seq` unless it has started already (the first call wins)."""
        state = self._rooms.setdefault(room, _Room())
        if state.next is not None:
            return
        state.next = next_seq
        for seq in [s for s in state.pending if s < next_seq]:
            del state.pending[seq]
        self._drain(room, state)

    def push(self, room: str, seq: int, item: T) -> None:
        """Accept one message: released now, held for an earlier seq, or dropped as late."""
        state = self._rooms.setdefault(room, _Room())
        if (state.next is not None and seq < state.next) or seq in state.pending:
            DROPPED.inc()
            return
        state.pending[seq] = item
        if state.next is not None and seq > state.next:
            HELD.inc()
        self._drain(room, state)
        if len(state.pending) > self._max_pending:
            self._give_up(room)

    def gap_filled(self, room: str, last: int) -> None:
        """The owner's fetch for `on_gap(room, _, last)` is over: seqs up to `last` still
        missing are given up; a later gap gets a window of its own."""
        state = self._rooms.get(room)
        if state is None:
            return
        state.filling = False
        if state.next is not None and state.next <= last:
            SKIPPED.inc(last + 1 - state.next)
            state.next = last + 1
        self._drain(room, state)

    def forget(self, room: str) -> None:
        """Drop the room's state (its last local listener left)."""
        state = self._rooms.pop(room, None)
        if state is not None and state.timer is not None:
            state.timer.cancel()

    def next_seq(self, room: str) -> int | None:
        """The seq the room waits for next, None before `expect` (for tests and metrics)."""
        state = self._rooms.get(room)
        return state.next if state else None

    def held(self, room: str) -> int:
        state = self._rooms.get(room)
        return len(state.pending) if state else 0

    def _drain(self, room: str, state: _Room[T]) -> None:
        if state.next is not None:
            while state.next in state.pending:
                seq = state.next
                item = state.pending.pop(seq)
                state.next = seq + 1
                self._release(room, seq, item)
        if not state.pending:
            if state.timer is not None:
                state.timer.cancel()
                state.timer = None
        elif state.timer is None and not state.filling:
            state.timer = asyncio.get_running_loop().call_later(self._window, self._give_up, room)

    def _give_up(self, room: str) -> None:
        """The window passed: ask for the missing seqs, or skip to the lowest held one."""
        state = self._rooms.get(room)
        if state is None:
            return
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        if not state.pending or state.filling:
            return
        if self._on_gap is not None and state.next is not None:
            state.filling = True
            self._on_gap(room, state.next, min(state.pending) - 1)
            return
        self._skip_to_held(room, state)

    def _skip_to_held(self, room: str, state: _Room[T]) -> None:
        if not state.pending:
            return
        lowest = min(state.pending)
        if state.next is not None:
            SKIPPED.inc(max(lowest - state.next, 0))
        state.next = lowest
        self._drain(room, state)
