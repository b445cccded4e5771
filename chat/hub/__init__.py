"""The hub: connections, rooms and fan-out inside one process (no SQL, JWT or Redis).

- `routing`: `Hub`, which routes events between the fan-out backend and this
  process's connections, orders room messages by seq and fills gaps from the
  database (with several processes), and batches presence changes per tick;
- `connection`: `Connection`, one socket's rooms, the seqs it was given, and
  its frames of one loop turn written at once;
- `reorder`: the per-room reorder buffer.
"""

from chat.hub.connection import Close, Connection, Sink
from chat.hub.routing import ADMINS, Hub, RoomLog, room_channel, user_channel

__all__ = [
    "ADMINS",
    "Close",
    "Connection",
    "Hub",
    "RoomLog",
    "Sink",
    "room_channel",
    "user_channel",
]
