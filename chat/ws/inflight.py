"""A connection's sends handed to the writer and not yet answered, up to a bound.

A client may pipeline sends (acks come back in order); past the bound the
session stops reading until acks free a place, and refuses (`overloaded`) if
none is freed in time.
"""

from __future__ import annotations

import asyncio


class InFlight:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.settled = asyncio.Event()  # set while nothing is in flight
        self.settled.set()
        self._has_room = asyncio.Event()  # set while another send may go in flight

    async def wait_for_room(self, lost: asyncio.Event, timeout: float) -> bool:
        """True once another send may go in flight, or the socket is lost (then it
        does not matter); False when `timeout` passed with the bound still reached."""
        if self.count < self.limit:
            return True
        self._has_room.clear()
        await _first_of(self._has_room, lost, timeout=timeout)
        return self._has_room.is_set() or lost.is_set()

    def add(self) -> None:
        self.count += 1
        self.settled.clear()

    def done(self) -> None:
        self.count -= 1
        if not self.count:
            self.settled.set()
        if self.count < self.limit:
            self._has_room.set()


async def _first_of(*events: asyncio.Event, timeout: float) -> None:
    """Wait until one of `events` is set, at most `timeout` seconds."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
