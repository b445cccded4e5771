"""Redis for tests: the shared server (`CHAT_TEST_REDIS_URL`) and private throwaway ones.

The shared Redis is never stopped by tests; isolation comes from a unique key
and channel prefix per test. Failure tests start a private `redis-server` on a
free port and kill it at will.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from tests.conftest import need_service
from tests.harness import free_port

SHARED_REDIS_URL = os.environ.get("CHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def shared_redis_url() -> str:
    """The shared Redis URL; skips (or fails under CHAT_REQUIRE_SERVICES=1) when it is down."""
    from urllib.parse import urlparse

    parsed = urlparse(SHARED_REDIS_URL)
    ok = _answers(parsed.hostname or "127.0.0.1", parsed.port or 6379)
    need_service("redis", ok, f"nothing answers PING at {SHARED_REDIS_URL}")
    return SHARED_REDIS_URL


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


class PrivateRedis:
    """A `redis-server` of our own on a free port, to stop and start in failure tests."""

    def __init__(self, workdir: Path) -> None:
        need_service("redis-server", shutil.which("redis-server") is not None, "not on PATH")
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--logfile", str(self.workdir / f"redis-{self.port}.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _answers("127.0.0.1", self.port):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """Stop abruptly (SIGKILL): clients see their connections reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
