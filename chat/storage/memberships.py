"""Members of public rooms, recorded from joins: many joins per transaction.

Joining a public room makes the user one of its members (`GET .../members`). A
join storm of new users would otherwise be a write transaction per join, queued
behind each other and behind the message writer on SQLite; here the joins
pending at a time are stored together, with one `INSERT ... ON CONFLICT DO
NOTHING`, and each join waits for its batch's commit (as a send waits for its
ack). Only a user's first join of a room comes here: later ones read
`member` as true at the join.
"""

from __future__ import annotations

import asyncio
import logging

from chat.storage.store import Store

log = logging.getLogger(__name__)

Membership = tuple[int, int]  # (room id, user id)


class MembershipRecorder:
    """Stores `(room, user)` memberships in batches; `record` returns once stored."""

    def __init__(self, store: Store, *, max_batch: int = 500) -> None:
        self._store = store
        self._max_batch = max_batch
        self._pending: dict[Membership, asyncio.Future[None]] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="membership-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for future in self._pending.values():  # shutting down: nobody waits for these
            if not future.done():
                future.set_result(None)

    async def record(self, room_id: int, user_id: int) -> None:
        """Make `user_id` a member of `room_id`; returns after the commit.

        A failed batch is logged, not raised: the join goes on, and the next
        join records the membership again.
        """
        key = (room_id, user_id)
        future = self._pending.get(key)
        if future is None:
            future = self._pending[key] = asyncio.get_running_loop().create_future()
            self._wakeup.set()
        await asyncio.shield(future)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = list(self._pending.items())[: self._max_batch]
                for key, _ in batch:
                    del self._pending[key]
                try:
                    await self._store.add_members([key for key, _ in batch])
                except Exception as exc:
                    log.warning("recording %d room memberships failed: %r", len(batch), exc)
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
