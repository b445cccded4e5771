"""A real HTTP receiver for webhook tests: `http.server` on a free port, in a thread.

It records every request (headers and exact body bytes), answers 500 to the first
`fail_first` requests (or to all while `failing`), sleeps `hang` seconds before
answering when set, and keeps the deliveries it accepted, deduplicated by their
`X-Chat-Delivery` id as a receiver should.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


class Receiver:
    def __init__(self, *, fail_first: int = 0, failing: bool = False, hang: float = 0) -> None:
        self.fail_first = fail_first
        self.failing = failing
        self.hang = hang
        self.requests: list[Received] = []  # every request, as it came
        self.accepted: dict[str, Received] = {}  # by delivery id, the first 2xx of each
        self.duplicates = 0  # accepted again after a 2xx (at least once on the wire)
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                got = Received({k.lower(): v for k, v in self.headers.items()}, body)
                code = receiver._decide(got)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def _decide(self, got: Received) -> int:
        with self._lock:
            self.requests.append(got)
            self._lock.notify_all()
            hang = self.hang
        if hang:
            time.sleep(hang)
        with self._lock:
            if self.failing or self.fail_first > 0:
                self.fail_first = max(0, self.fail_first - 1)
                return 500
            delivery = got.headers["x-chat-delivery"]
            if delivery in self.accepted:
                self.duplicates += 1
            else:
                self.accepted[delivery] = got
            self._lock.notify_all()
            return 200

    def wait(self, done: Callable[[Receiver], bool], timeout: float = 15.0) -> None:
        """Block until `done(self)` holds (checked on every request), or fail."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not done(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver: condition not met in {timeout}s")
                self._lock.wait(left)

    def bodies(self) -> list[dict[str, Any]]:
        """Accepted deliveries' bodies, in the order they were accepted."""
        with self._lock:
            return [r.json for r in self.accepted.values()]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
