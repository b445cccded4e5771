"""An HTTP proxy that refuses WebSocket upgrades, as some corporate proxies do.

`WsBlockingProxy(upstream_port)` forwards each connection to the server, except one
whose first request asks to upgrade to a WebSocket while `block` is set: that one
gets `403 Forbidden` and is closed, so the browser's WebSocket fails for real (a
refused handshake, close code 1006). Everything else (pages, REST, the event
stream) passes through byte for byte. `cut()` and `restore()` (from FaultProxy) take
the whole network away and give it back. Browsers open each WebSocket on a fresh
connection, so looking at the first request of a connection is enough.
"""

from __future__ import annotations

import asyncio

from tests.faultproxy import FaultProxy, _pipe

MAX_HEAD = 64 * 1024
REFUSAL = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class WsBlockingProxy(FaultProxy):
    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.block = True
        self.refused_upgrades = 0  # WebSocket handshakes answered 403

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:  # `cut()`: Alice's network is gone (FaultProxy)
            self.refused += 1
            writer.transport.abort()
            return
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.transport.abort()
            return
        if self.block and b"upgrade: websocket" in head.lower():
            self.refused_upgrades += 1
            writer.write(REFUSAL)
            await writer.drain()
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:  # the server is down: the browser sees a dropped connection
            writer.transport.abort()
            return
        up_writer.write(head)
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            writer.transport.abort()
            up_writer.transport.abort()
