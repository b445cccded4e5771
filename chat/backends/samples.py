"""The console's charts: where each process's samples are kept (the `Samples` protocol).

`memory_samples.MemorySamples` keeps nothing beyond this process (one process: its
own ring buffer is the whole picture); `redis_samples.RedisSamples` keeps every
process's last hour in Redis, so any process can answer for the whole site, and
lists the processes that sampled lately (a heartbeat, for the health view).
"""

from __future__ import annotations

from typing import Protocol


class Samples(Protocol):
    async def put(self, node: str, sample: str, keep: int) -> None:
        """Add this process's newest sample (JSON), keeping its last `keep`."""

    async def all(self, since: float) -> dict[str, tuple[float, list[str]]]:
        """Every process that sampled after `since` (epoch seconds): its last sample
        time and its samples, oldest first. Empty when only this process counts."""
