"""Prometheus metrics, defined once per process (the default registry).

With `chat serve --workers N` every process writes its values to files in
`PROMETHEUS_MULTIPROC_DIR` and `/metrics` adds them up (`chat.monitoring.multiprocess`).
A gauge therefore says how its processes' values combine: `livesum` for what each
process holds (connections, queues), `livemostrecent` for what every process reads
from the shared database (the task queue), so it is counted once.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge(
    "chat_connections", "Open authenticated WebSocket connections", multiprocess_mode="livesum"
)
PROCESSES = Gauge(
    "chat_processes", "Serving processes (workers) alive", multiprocess_mode="livesum"
)
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
ACK_SECONDS = Histogram(
    "chat_ack_seconds",
    "Time from a WebSocket send's arrival to its ack being queued for the socket",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
# Sampled every few seconds by `chat.monitoring.sampler` (set_function cannot work
# across processes: the scraping process cannot call into the others).
ROOMS_ACTIVE = Gauge(
    "chat_rooms_active",
    "Rooms with a member connected to this process (summed over processes: "
    "a room open in two processes counts twice, once per broker subscription)",
    multiprocess_mode="livesum",
)
WRITE_QUEUE = Gauge(
    "chat_write_queue", "Sends waiting for the writer to store them", multiprocess_mode="livesum"
)
FANOUT_QUEUE = Gauge(
    "chat_fanout_queue",
    "Publishes waiting to be handed to the broker (Redis; 0 in process)",
    multiprocess_mode="livesum",
)
TASK_QUEUE = Gauge(
    "chat_task_queue",
    "Tasks queued and not started (site-wide)",
    multiprocess_mode="livemostrecent",
)
TASK_QUEUE_AGE = Gauge(
    "chat_task_queue_age_seconds",
    "Age of the oldest queued task (0 when none; site-wide)",
    multiprocess_mode="livemostrecent",
)
