"""/metrics of `chat serve --workers 2`: whichever worker answers, it gives the site's totals.

Both workers serve one port (the kernel hands each new connection to one of them);
the test sees which worker holds each socket (psutil: the worker process whose
connection has the client's port), keeps connecting until both hold clients, and
scrapes until each worker has answered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import Databases
from tests.harness import Api, ServerProcess, connect, join, say

MESSAGES_EACH = 7
STARTUP = 60  # seconds: two workers import everything at once on a busy 2-core machine
Samples = dict[str, float]


def workers(server: ServerProcess) -> list[psutil.Process]:
    """The worker processes uvicorn spawned (not its resource tracker)."""
    assert server.proc is not None
    found = []
    for child in psutil.Process(server.proc.pid).children():
        try:  # a killed worker stays a zombie until uvicorn reaps it
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def owner(server: ServerProcess, client_port: int) -> int:
    """The pid of the worker that accepted the connection from `client_port`."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for worker in workers(server):
            try:
                conns = worker.net_connections(kind="tcp")
            except psutil.Error:  # gone since it was listed
                continue
            for conn in conns:
                if (
                    conn.laddr
                    and conn.raddr
                    and conn.laddr.port == server.port
                    and conn.raddr.port == client_port
                ):
                    return worker.pid
        time.sleep(0.02)
    raise AssertionError(f"no worker holds the connection from port {client_port}")


def parse(text: str) -> Samples:
    samples: Samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def scrape(server: ServerProcess) -> tuple[int, Samples]:
    """GET /metrics on a new connection: (the worker that answered, its samples)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        pid = owner(server, sock.getsockname()[1])
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return pid, parse(body.decode())


def scrape_each_worker(
    server: ServerProcess, check: Callable[[Samples], bool]
) -> dict[int, Samples]:
    """Scrape until every worker has answered with samples that pass `check` (waiting
    up to 10 s for gauges sampled each second); returns the last answer of each."""
    deadline = time.monotonic() + 10
    answers: dict[int, Samples] = {}
    while time.monotonic() < deadline:
        pid, samples = scrape(server)
        if check(samples):
            answers[pid] = samples
        if answers.keys() >= {w.pid for w in workers(server)} and len(answers) >= 2:
            return answers
        time.sleep(0.05)
    last = scrape(server)[1]
    raise AssertionError(f"workers that answered as expected: {sorted(answers)}; last: {last}")


async def wait_for_workers(server: ServerProcess, count: int) -> list[int]:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        pids = [w.pid for w in workers(server)]
        if len(pids) == count and scrape(server)[1].get("chat_processes") == count:
            return pids
        await asyncio.sleep(0.2)
    raise AssertionError(f"{count} workers did not come up: {server.log()[-2000:]}")


@pytest.mark.timeout(300)
async def test_metrics_add_up_over_two_workers(databases: Databases, tmp_path: Path) -> None:
    server = ServerProcess(
        databases.new(), tmp_path, serve_args=["--workers", "2"], send_burst=100
    ).start(timeout=STARTUP)
    clients: dict[int, list[tuple[ClientConnection, Any]]] = {}
    try:
        pids = await wait_for_workers(server, 2)
        metrics_dir = Path(psutil.Process(pids[0]).environ()["PROMETHEUS_MULTIPROC_DIR"])
        assert metrics_dir.is_dir() and (metrics_dir.stat().st_mode & 0o077) == 0  # private
        api = Api(server)
        room = api.room(api.user())
        # Connect until each worker holds at least two clients.
        for _ in range(40):
            if len(clients) == 2 and all(len(c) >= 2 for c in clients.values()):
                break
            account = api.user()
            ws = await connect(server, account.token)
            clients.setdefault(owner(server, ws.local_address[1]), []).append((ws, account))
        assert sorted(clients) == sorted(pids), f"connections per worker: {clients}"
        everyone = [ws for held in clients.values() for ws, _ in held]
        for ws in everyone:
            await join(ws, room)
            for n in range(MESSAGES_EACH):
                await say(ws, room, f"message {n}")
        sent = len(everyone) * MESSAGES_EACH

        def site_totals(samples: Samples) -> bool:
            return (
                samples.get("chat_messages_total") == sent
                and samples.get('chat_frames_in_total{type="send"}') == sent
                and samples.get("chat_ack_seconds_count") == sent
                and samples.get("chat_write_batch_size_sum") == sent
                and samples.get("chat_connections") == len(everyone)
                and samples.get("chat_rooms_active") == 2  # the room is open in both
                and samples.get("chat_processes") == 2
            )

        answers = scrape_each_worker(server, site_totals)
        assert len(answers) == 2
        assert len(api.history(clients[pids[0]][0][1], room, limit=200)) == sent

        # A worker killed outright: uvicorn starts another; its clients are gone from
        # the gauges, its counts stay in the totals.
        killed = pids[0]
        os.kill(killed, signal.SIGKILL)
        survivors = len(clients[pids[1]])
        new_pids = await wait_for_workers(server, 2)
        assert killed not in new_pids
        scrape_each_worker(
            server,
            lambda s: (
                s.get("chat_messages_total") == sent
                and s.get("chat_connections") == survivors
                and s.get("chat_rooms_active") == 1
            ),
        )
    finally:
        for held in clients.values():
            for ws, _ in held:
                await ws.close()
        server.stop()
    assert not metrics_dir.exists(), "chat serve left its metrics directory behind"


def test_one_process_keeps_its_own_registry(databases: Databases, tmp_path: Path) -> None:
    """Without --workers there is no multiprocess directory and /metrics still answers."""
    server = ServerProcess(databases.new(), tmp_path).start()
    try:
        assert server.proc is not None
        environ = psutil.Process(server.proc.pid).environ()
        assert "PROMETHEUS_MULTIPROC_DIR" not in environ
        samples = scrape_single(server)
        assert samples["chat_processes"] == 1
        assert samples["chat_connections"] == 0
        assert "process_cpu_seconds_total" in samples  # the default registry's collectors
    finally:
        server.stop()


def scrape_single(server: ServerProcess) -> Samples:
    return parse(httpx.get(f"{server.http}/metrics").text)
