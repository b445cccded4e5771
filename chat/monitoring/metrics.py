"""Prometheus metrics, defined once per process (the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("chat_connections", "Open authenticated WebSocket connections")
FRAMES_IN = Counter("chat_frames_in_total", "Client frames received", ["type"])
_frames_in: dict[str, Counter] = {}


def frame_in(kind: str) -> None:
    """Count a client frame; the labelled child is looked up once per kind (hot path)."""
    child = _frames_in.get(kind)
    if child is None:
        child = _frames_in[kind] = FRAMES_IN.labels(kind)
    child.inc()


FRAMES_OUT = Counter("chat_frames_out_total", "Frames written to sockets")
MESSAGES = Counter("chat_messages_total", "Messages stored")
DUPLICATES = Counter("chat_duplicate_sends_total", "Sends answered from an earlier ref")
REPEATS_DROPPED = Counter(
    "chat_repeats_dropped_total", "Room messages not sent to a connection that had them already"
)
GAP_FILLS = Counter(
    "chat_gap_fill_messages_total", "Room messages read back from the database to fill a gap"
)
ERRORS = Counter("chat_errors_total", "Error frames sent to clients", ["code"])
AUTH_FAILURES = Counter("chat_auth_failures_total", "Refused authentications", ["where"])
SLOW_CONSUMERS = Counter("chat_slow_consumers_total", "Connections closed for a full queue")
RATE_LIMITED = Counter("chat_rate_limited_total", "Frames refused by rate limits", ["action"])
STORE_SECONDS = Histogram(
    "chat_store_seconds",
    "Time from a send's arrival to its commit (its ack follows at once)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
HEARTBEAT_TIMEOUTS = Counter(
    "chat_heartbeat_timeouts_total", "Connections closed for not answering a ping (4002)"
)
CLOSES = Counter("chat_server_closes_total", "Connections closed by the server", ["code"])
THROTTLED = Counter(
    "chat_throttled_total",
    "Requests refused by a per-address or per-account limit",
    ["what"],
)
ABUSE_EVENTS = Counter("chat_abuse_events_total", "Refusals reported to abuse listeners", ["kind"])
