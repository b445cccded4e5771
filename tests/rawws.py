"""A raw WebSocket client over plain sockets, for clients no library would be.

`open_frozen` completes the handshake on a blocking socket and returns it: the
test then simply never reads it again (a frozen or half-open peer). `RawClient`
speaks frames by hand over asyncio streams, so a test can see the server's
pings, answer them (or not) and send frames no well-behaved library sends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from collections.abc import Sequence
from typing import Any

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def _handshake(port: int, headers: dict[str, str] | None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """One client frame (masked, as RFC 6455 requires of clients)."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(bit | n)
    elif n < 1 << 16:
        head.append(bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(bit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + key + masked


def open_frozen(port: int, token: str, frames: Sequence[dict[str, Any]] = ()) -> socket.socket:
    """Handshake with a bearer token, send `frames`, and hand back a socket nobody reads."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(_handshake(port, {"Authorization": f"Bearer {token}"}))
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)  # byte by byte: leave every frame after the headers unread
        if not chunk:
            raise ConnectionError("closed during the handshake")
        response += chunk
    status = response.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        raise ConnectionError(status.decode(errors="replace"))
    for frame in frames:
        sock.sendall(encode_frame(TEXT, json.dumps(frame).encode()))
    return sock


class RawClient:
    """Frames by hand over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0

    @classmethod
    async def connect(cls, port: int, headers: dict[str, str] | None = None) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_handshake(port, headers))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        client = cls(reader, writer)
        client.status = int(head.split(b" ", 2)[1])
        return client

    async def send(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        self.writer.write(encode_frame(opcode, payload, fin=fin))
        await self.writer.drain()

    async def send_json(self, frame: dict[str, Any]) -> None:
        await self.send(TEXT, json.dumps(frame).encode())

    async def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next frame as (opcode, payload); raises EOFError at the end of the stream."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            n = head[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise EOFError("connection ended") from exc
        return head[0] & 0x0F, payload

    async def read_json(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next text frame as JSON, answering pings on the way."""
        while True:
            opcode, payload = await self.read_frame(timeout)
            if opcode == PING:
                await self.send(PONG, payload)
            elif opcode == TEXT:
                frame: dict[str, Any] = json.loads(payload)
                return frame
            elif opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise EOFError(f"closed with {code}")

    async def read_close(self, timeout: float = 5.0) -> int:
        """Skip frames (answering pings) until the close frame; its code."""
        while True:
            opcode, payload = await self.read_frame(timeout)
            if opcode == PING:
                await self.send(PONG, payload)
            elif opcode == CLOSE:
                return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
