"""The last hour of this process, sampled every 10 s, for the console's charts.

A `History` keeps a ring buffer of `Sample`s (one hour: 360 of 10 s), each
taken from what the process counts anyway: the Prometheus counters (messages
stored, error frames, server closes, refusals by a limit), the hub's open
connections, and two feeds of its own filled on hot paths at the cost of an
append: `ACK_LATENCY` (a bounded reservoir of send-to-commit times, read as
p50/p99 per interval) and `HTTP_ERRORS` (responses of 400 and above, by status).

Each process keeps its own buffer. With Redis every sample is also put in Redis
(`chat.backends.redis_samples`), so `site()` merges every process's last hour:
counts are summed, latencies are the slowest process's (an upper bound, not a
site-wide percentile).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from chat.backends.samples import Samples
from chat.monitoring import metrics

log = logging.getLogger(__name__)

INTERVAL = 10.0  # seconds between samples (default; `CHAT_STATS_SAMPLE_INTERVAL`)
HOUR = 3600.0  # what the buffer covers
RESERVOIR = 2048  # latencies kept per interval, chosen uniformly at random
QUIET_CLOSES = frozenset({"1000", "1001"})  # normal ends and restarts are no error


class Reservoir:
    """A uniform random sample of at most `size` values observed since the last `take`."""

    def __init__(self, size: int = RESERVOIR) -> None:
        self.size = size
        self.values: list[float] = []
        self.seen = 0

    def observe(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = random.randrange(self.seen)  # statistics, not secrets
        if slot < self.size:
            self.values[slot] = value

    def take(self) -> list[float]:
        values, self.values, self.seen = self.values, [], 0
        return values


ACK_LATENCY = Reservoir()  # seconds from a send's arrival to its commit (its ack)
HTTP_ERRORS: Counter[int] = Counter()  # HTTP responses of 400 and above, by status


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The nearest-rank `q` quantile of sorted values (None when there are none)."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


@dataclass
class Sample:
    ts: float  # end of the interval, a multiple of INTERVAL (epoch seconds)
    messages: int = 0  # stored during the interval
    connections: int = 0  # open at the end
    ack_p50_ms: float | None = None
    ack_p99_ms: float | None = None
    acks: int = 0  # sends committed during the interval
    errors: dict[str, int] = field(default_factory=dict)  # "ws:rate_limited", "http:429", ...


def _totals(metric: MetricWrapperBase) -> dict[str, float]:
    """A counter's current totals by label value ("" without labels), this process."""
    out: dict[str, float] = {}
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith("_total"):
                key = ",".join(s.labels.values())
                out[key] = out.get(key, 0.0) + s.value
    return out


class History:
    """Samples this process every `interval` seconds into a ring buffer of one hour."""

    ERROR_SOURCES: tuple[tuple[str, MetricWrapperBase], ...] = (
        ("ws", metrics.ERRORS),
        ("close", metrics.CLOSES),
        ("limit", metrics.RATE_LIMITED),
        ("throttle", metrics.THROTTLED),
    )

    def __init__(
        self,
        node: str,
        connections: Callable[[], int],
        shared: Samples,
        interval: float = INTERVAL,
    ) -> None:
        self.node = node
        self.interval = interval
        self.keep = math.ceil(HOUR / interval)
        self._connections = connections
        self._shared = shared
        self.samples: deque[Sample] = deque(maxlen=self.keep)
        self._last: dict[str, dict[str, float]] = self._read_counters()
        self._last_http: Counter[int] = Counter(HTTP_ERRORS)
        self._task: asyncio.Task[None] | None = None

    def _read_counters(self) -> dict[str, dict[str, float]]:
        counters = {name: _totals(metric) for name, metric in self.ERROR_SOURCES}
        counters["messages"] = _totals(metrics.MESSAGES)
        return counters

    def sample(self, now: float) -> Sample:
        """Close the interval ending `now`: what changed since the last sample."""
        counters = self._read_counters()
        errors: dict[str, int] = {}
        for name, totals in counters.items():
            if name == "messages":
                continue
            before = self._last.get(name, {})
            for key, value in totals.items():
                delta = int(value - before.get(key, 0.0))
                if delta > 0 and not (name == "close" and key in QUIET_CLOSES):
                    errors[f"{name}:{key}"] = delta
        for status, count in HTTP_ERRORS.items():
            delta = count - self._last_http.get(status, 0)
            if delta > 0:
                errors[f"http:{status}"] = delta
        messages = counters["messages"].get("", 0.0) - self._last["messages"].get("", 0.0)
        self._last, self._last_http = counters, Counter(HTTP_ERRORS)
        latencies = sorted(ACK_LATENCY.take())
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        return Sample(
            ts=now,
            messages=int(messages),
            connections=self._connections(),
            ack_p50_ms=None if p50 is None else round(p50 * 1000, 2),
            ack_p99_ms=None if p99 is None else round(p99 * 1000, 2),
            acks=len(latencies),
            errors=errors,
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        # On the wall clock's marks (every 10 s), so every process's samples line up;
        # each mark once, even when a timer fires a little early or the loop stalled.
        step = self.interval
        mark = math.floor(time.time() / step) * step
        while True:
            mark = max(mark + step, math.floor(time.time() / step) * step)
            await asyncio.sleep(max(0.0, mark - time.time()))
            sample = self.sample(round(mark, 3))
            self.samples.append(sample)
            try:
                await self._shared.put(self.node, json.dumps(asdict(sample)), self.keep)
            except Exception as exc:  # Redis down: the local buffer still has it
                log.warning("sharing a chart sample failed: %r", exc)

    async def site(self) -> tuple[list[Sample], dict[str, float]]:
        """The last hour of the whole site, oldest first, and each process seen sampling
        (node -> when it last sampled). Just this process without Redis."""
        now = time.time()
        try:
            shared = await self._shared.all(now - HOUR)
        except Exception as exc:
            log.warning("reading chart samples failed: %r", exc)
            shared = {}
        if not shared:
            last = self.samples[-1].ts if self.samples else now
            return list(self.samples), {self.node: last}
        per_node = {
            node: [Sample(**json.loads(raw)) for raw in raws] for node, (_, raws) in shared.items()
        }
        return merge(per_node.values()), {node: seen for node, (seen, _) in shared.items()}


def merge(series: Iterable[list[Sample]]) -> list[Sample]:
    """Several processes' samples as one series: sums by time, the slowest latencies."""
    slots: dict[float, Sample] = {}
    for samples in series:
        for s in samples:
            into = slots.setdefault(s.ts, Sample(ts=s.ts))
            into.messages += s.messages
            into.connections += s.connections
            into.acks += s.acks
            into.ack_p50_ms = _max(into.ack_p50_ms, s.ack_p50_ms)
            into.ack_p99_ms = _max(into.ack_p99_ms, s.ack_p99_ms)
            for key, count in s.errors.items():
                into.errors[key] = into.errors.get(key, 0) + count
    return [slots[ts] for ts in sorted(slots)]


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def as_json(samples: list[Sample]) -> list[dict[str, Any]]:
    return [asdict(s) for s in samples]
