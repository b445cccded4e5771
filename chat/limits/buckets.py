"""Rate limits: token buckets for frames and handshakes, failure windows for logins.

All state is per process (with several workers or hosts each enforces its
own share; see docs/operations.md). Every structure is bounded: idle keys are
forgotten first when `max_keys` is reached.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    refused_in_a_row: int = 0


MIN_WAIT = 0.001  # a refusal always says to wait a little: 0 would read as "now"


class RateLimiter:
    """Token buckets keyed by (action, key). `take` answers None (allowed) or seconds to wait.

    `key` is a user id for frames (shared by all of that user's connections)
    or an address for handshakes.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self._buckets: dict[tuple[str, Hashable], _Bucket] = {}
        self._max_keys = max_keys

    def take(self, action: str, key: Hashable, rate: float, burst: int) -> float | None:
        now = time.monotonic()
        bucket = self._buckets.get((action, key))
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._forget_full(now, rate, burst)
            bucket = self._buckets[(action, key)] = _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.refused_in_a_row = 0
            return None
        bucket.refused_in_a_row += 1
        return max(round((1.0 - bucket.tokens) / rate, 3), MIN_WAIT)

    def refused_in_a_row(self, action: str, key: Hashable) -> int:
        bucket = self._buckets.get((action, key))
        return bucket.refused_in_a_row if bucket else 0

    def _forget_full(self, now: float, rate: float, burst: int) -> None:
        # Idle buckets that have refilled carry no state worth keeping.
        for k, b in list(self._buckets.items()):
            if b.tokens + (now - b.updated) * rate >= burst:
                del self._buckets[k]
        if len(self._buckets) >= self._max_keys:  # still full: drop the oldest half
            for k in sorted(self._buckets, key=lambda k: self._buckets[k].updated)[
                : self._max_keys // 2
            ]:
                del self._buckets[k]


class FailureWindow:
    """Failures per key over a sliding window: a key with `limit` of them is blocked.

    Used for logins, once keyed by account and once by address. `blocked`
    answers how many seconds remain until the oldest counted failure leaves
    the window (the `Retry-After`), or None.
    """

    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[Hashable, deque[float]] = {}
        self._max_keys = max_keys

    def blocked(self, key: Hashable, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        failures = self._prune(key, now)
        if failures is None or len(failures) < self.limit:
            return None
        return max(failures[-self.limit] + self.window - now, 0.001)

    def fail(self, key: Hashable, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        failures = self._prune(key, now)
        if failures is None:
            if len(self._failures) >= self._max_keys:
                self._forget(now)
            failures = self._failures[key] = deque(maxlen=self.limit)
        failures.append(now)

    def clear(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def _prune(self, key: Hashable, now: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def _forget(self, now: float) -> None:
        for key in list(self._failures):
            self._prune(key, now)
        if len(self._failures) >= self._max_keys:
            oldest = sorted(self._failures, key=lambda k: self._failures[k][-1])
            for key in oldest[: self._max_keys // 2]:
                del self._failures[key]


class LoginThrottle:
    """Failed logins counted per (account, address) and per address; either limit blocks.

    The account count is kept per address so that strangers cannot lock an
    account for everyone: failures from one address block that account only
    from that address. The per-address limit still caps one attacker across
    every account it tries.
    """

    def __init__(self, per_account: int, per_address: int, window: float) -> None:
        self.accounts = FailureWindow(per_account, window)
        self.addresses = FailureWindow(per_address, window)

    def blocked(self, account: str, address: str | None) -> float | None:
        """Seconds until a login for `account` from `address` may be tried again, or None."""
        waits = [self.accounts.blocked((account, address))]
        if address is not None:
            waits.append(self.addresses.blocked(address))
        found = [w for w in waits if w is not None]
        return max(found) if found else None

    def failed(self, account: str, address: str | None) -> None:
        self.accounts.fail((account, address))
        if address is not None:
            self.addresses.fail(address)

    def succeeded(self, account: str, address: str | None) -> None:
        """A right password clears the account's count from that address (not the address's)."""
        self.accounts.clear((account, address))


class Busy(Exception):
    """Too much work of one kind is already in flight: try again shortly."""


class Gate:
    """Caps how many of one kind of request are in flight (running or queued)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def __enter__(self) -> Gate:
        if self.in_flight >= self.limit:
            raise Busy(f"{self.in_flight} already in flight")
        self.in_flight += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.in_flight -= 1
