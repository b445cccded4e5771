"""Abuse events: one hook point where limits report what they refused.

Limits call `AbuseMonitor.report(...)` when they refuse or close something;
listeners (the alerts service, for one) subscribe with `subscribe(listener)`
and decide what deserves an alert. Reporting is synchronous, never raises and
never awaits, so hot paths stay cheap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from chat.monitoring import metrics

log = logging.getLogger(__name__)

AbuseKind = Literal[
    "rate_limit_close",  # a connection kept flooding and was closed (4029)
    "auth_failure",  # a login, a WebSocket handshake or auth frame was refused
    "login_throttled",  # a login was refused with 429 before checking the password
    "handshake_throttled",  # a WebSocket handshake was refused with 429
]


@dataclass(frozen=True, slots=True)
class AbuseEvent:
    kind: AbuseKind
    address: str | None = None
    user_id: int | None = None
    username: str | None = None
    detail: str = ""
    ts: float = field(default_factory=time.time)


AbuseListener = Callable[[AbuseEvent], None]


class AbuseMonitor:
    """Fans abuse events out to listeners and counts them in Prometheus."""

    def __init__(self) -> None:
        self._listeners: list[AbuseListener] = []

    def subscribe(self, listener: AbuseListener) -> None:
        """Call `listener(event)` for every later event (from the event loop's thread)."""
        self._listeners.append(listener)

    def report(self, event: AbuseEvent) -> None:
        metrics.ABUSE_EVENTS.labels(event.kind).inc()
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not break the limit
                log.exception("abuse listener %r failed", listener)
