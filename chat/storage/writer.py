"""Group commit: one writer per process stores every pending send, a batch per transaction.

Senders hand their message to `MessageWriter.submit` and go on reading frames;
the writer takes whatever is pending (up to `max_batch`), stores it in one
transaction (`Store.save_messages`), then, in the batch's order, tells each
sender (its `ack`) and publishes the new messages (each room's in seq order).
While a batch commits the next one gathers, so the batch grows with the load
and the cost per message falls: one commit per batch, not per message.

A batch that fails stores nothing and leaves no gap (the transaction rolls
back, seqs included): each of its senders is told the exception, and may send
again with the same `ref`. Work waiting is bounded (`max_pending`): past it,
`submit` refuses at once (`WriterFull`) instead of queueing without limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Histogram

from chat.monitoring import history, metrics
from chat.storage.records import NewMessage, Stored
from chat.storage.store import Store

log = logging.getLogger(__name__)

# `ReadOnlyRoom` (an Exception) answers a send to an archived room; nothing was stored.
Done = Callable[[Stored | Exception], None]
Publish = Callable[[Sequence[Stored]], Awaitable[None]]

BATCH_SIZES = Histogram(
    "chat_write_batch_size",
    "Messages stored per transaction",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)


class WriterFull(Exception):
    """More sends are waiting to be stored than the writer takes."""


@dataclass(slots=True)
class _Pending:
    message: NewMessage
    done: Done
    queued_at: float


class MessageWriter:
    """Stores sends in batches, then acks and publishes them in order."""

    def __init__(self, store: Store, publish: Publish, *, max_batch: int, max_pending: int) -> None:
        self._store = store
        self._publish = publish
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="message-writer")

    async def stop(self) -> None:
        """Store what is pending (bounded by the caller's timeout), then stop."""
        while self._pending:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def submit(self, message: NewMessage, done: Done) -> None:
        """Queue `message`; `done` is called with its `Stored` or the batch's exception."""
        if len(self._pending) >= self._max_pending:
            raise WriterFull
        self._pending.append(_Pending(message, done, time.perf_counter()))
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                count = min(len(self._pending), self._max_batch)
                batch = [self._pending.popleft() for _ in range(count)]
                await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        BATCH_SIZES.observe(len(batch))
        try:
            stored = await self._store.save_messages([p.message for p in batch])
        except Exception as exc:
            log.warning("storing a batch of %d messages failed: %r", len(batch), exc)
            for pending in batch:
                _tell(pending.done, exc)
            return
        now = time.perf_counter()
        for pending, result in zip(batch, stored, strict=True):
            metrics.STORE_SECONDS.observe(now - pending.queued_at)
            history.ACK_LATENCY.observe(now - pending.queued_at)
            _tell(pending.done, result)
        kept = [result for result in stored if isinstance(result, Stored)]
        fresh = [result for result in kept if not result.duplicate]
        metrics.MESSAGES.inc(len(fresh))
        metrics.DUPLICATES.inc(len(kept) - len(fresh))
        if fresh:
            try:
                await self._publish(fresh)
            except Exception:  # stored: other processes read it back (`Hub.catch_up`)
                log.exception("publishing %d stored messages failed", len(fresh))


def _tell(done: Done, result: Stored | Exception) -> None:
    try:
        done(result)
    except Exception:
        log.exception("a sender's callback failed")
