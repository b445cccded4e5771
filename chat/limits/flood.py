"""How a WebSocket session answers a client that keeps sending refused frames.

Each frame draws from the user's bucket (`chat.backends` limits, shared by every
process with Redis). A refusal answers `rate_limited` with `retry_after`; a
client that keeps sending while refused is read more slowly (a pause of up to
`PENALTY_MAX` per frame after `PENALTY_AFTER` refusals), so a flood costs the
server a few frames a second instead of all its CPU; after `close_after`
refusals it is closed with 4029. Refusals count from the last time two frames
in a row were accepted, so a flood that gets one frame through now and then
(the bucket refills) still counts up.
"""

from __future__ import annotations

from dataclasses import dataclass

from chat.backends.limits import Limiter
from chat.monitoring import metrics

PENALTY_AFTER = 5  # refusals in a row before the socket is read more slowly
PENALTY_MAX = 0.05  # the longest pause after one refusal, in seconds


@dataclass(frozen=True, slots=True)
class Refusal:
    retry_after: float  # seconds until the bucket has a token again
    pause: float  # seconds to wait before reading the next frame (0: none)
    close: bool  # refused too often: close the socket (4029) once its acks are out


class FloodGuard:
    """One session's refusals, counted across its frames."""

    def __init__(self, limits: Limiter, user_id: int, close_after: int) -> None:
        self._limits = limits
        self._user_id = user_id
        self._close_after = close_after
        self._strikes = 0  # refusals since two frames in a row were accepted
        self._accepted_last = True

    async def check(self, action: str, rate: float, burst: int) -> Refusal | None:
        """Take a token for `action`; None when the frame may go on."""
        wait, refused = await self._limits.hit(action, self._user_id, rate, burst)
        if wait is None:
            if self._accepted_last:
                self._strikes = 0  # two accepted in a row: it has calmed down
            self._accepted_last = True
            return None
        self._strikes += 1
        self._accepted_last = False
        refused = max(refused, self._strikes)
        metrics.RATE_LIMITED.labels(action).inc()
        pause = min(wait, PENALTY_MAX) if refused >= PENALTY_AFTER else 0.0
        return Refusal(wait, pause, refused >= self._close_after)
