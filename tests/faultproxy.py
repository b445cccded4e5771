"""A TCP proxy that a test can cut and restore: a network fault between one process and Redis.

`FaultProxy(upstream_port)` listens on a free port of 127.0.0.1 and forwards each
connection to `127.0.0.1:upstream_port`. `cut()` closes every forwarded
connection (both sides, at once) and from then on accepts new connections only
to close them; `restore()` forwards again. It runs on its own event loop in a
daemon thread, so it works the same whether the test is async or not (and
never depends on the test's loop being free).

Point one server's `CHAT_REDIS_URL` at `proxy.url` and the other's straight at
Redis: the first then loses pub/sub messages while the proxy is cut, the
second does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from tests.harness import free_port

T = TypeVar("T")
CHUNK = 64 * 1024


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy")
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._cut = False
        self._changed = threading.Condition()
        self.forwarded = 0  # connections forwarded since start
        self.refused = 0  # connections closed at once because the proxy was cut

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def is_cut(self) -> bool:
        return self._cut

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def cut(self) -> int:
        """Close every forwarded connection and refuse new ones; how many were closed."""
        return self._call(self._cut_all())

    def restore(self) -> None:
        """Forward new connections again (the closed ones stay closed)."""
        self._cut = False

    def live(self) -> int:
        """Connections being forwarded now."""
        return len(self._pairs)

    def wait_forwarded(self, count: int, timeout: float = 15.0) -> None:
        """Wait until `count` connections have been forwarded since start."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.forwarded < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.forwarded} connections forwarded, not {count}")
                self._changed.wait(left)

    # --- inside the proxy's loop ---------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut_all()
        self._cut = True

    async def _cut_all(self) -> int:
        self._cut = True
        pairs = list(self._pairs)
        for client, upstream in pairs:
            client.transport.abort()
            upstream.transport.abort()
        self._pairs.clear()
        return len(pairs)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        if self._cut:  # cut while connecting upstream
            self.refused += 1
            writer.transport.abort()
            up_writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        with self._changed:
            self.forwarded += 1
            self._changed.notify_all()
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            writer.transport.abort()
            up_writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.transport.abort()
