"""What processes share, kept in this process or in Redis: one protocol per concern.

| concern     | protocol                 | one process       | several (`CHAT_REDIS_URL`) |
|-------------|--------------------------|-------------------|----------------------------|
| fan-out     | `fanout.Broker`          | `memory_fanout`   | `redis_fanout`             |
| presence    | `presence.PresenceStore` | `memory_presence` | `redis_presence`           |
| rate limits | `limits.Limiter`         | `memory_limits`   | `redis_limits`             |
| connections | `connections.ConnectionCounter` | `memory_connections` | `redis_connections` |
| alert counts| `repeats.Repeats`        | `memory_repeats`  | `redis_repeats`            |
| stream tickets | `tickets.Tickets`     | `memory_tickets`  | `redis_tickets`            |
| chart samples | `samples.Samples`      | `memory_samples`  | `redis_samples`            |

Fan-out carries room messages and every other cross-process signal: presence
changes, revocations (`user:<id>` channels close a user's sockets everywhere)
and task frames (`admins`); task cancels are stored in the database.

`create_backends(settings)` reads the settings once and builds them all on
one `redis_client.RedisConnection` (or none).
"""

from chat.backends.factory import Backends, create_backends

__all__ = ["Backends", "create_backends"]
