"""Limits that keep one client from taking what belongs to all.

- `buckets`: in-process token buckets and failure windows (handshakes per
  address, logins, registrations, room creations, the hashing queue).
- `body`: the HTTP request body limit (a middleware: refused while streaming).
- `flood`: how a WebSocket session answers a client that keeps flooding
  (slower reads, then close 4029).

Per-user frame limits shared by every process live with the other shared
state, in `chat.backends` (`memory_limits`, `redis_limits`).
"""
