"""The WebSocket layer: `/ws` from the handshake to the last frame.

- `handshake`: draining, per-address throttle, Origin, authentication (header or
  first frame), then a `Session`.
- `session`: one connection's life: hello, the receive loop, expiry, cleanup.
- `commands`: one handler per client frame type (`join`, `leave`, `send`,
  `typing`, `ping`, `auth`), found by the frame's class: a new frame adds a
  handler, not a branch.
- `socket`: uvicorn's WebSocket protocol, extended (jittered pings, bounded
  closes, frames written straight to the transport).
- `deps`: the parts of the server this layer uses, and nothing else.
"""
