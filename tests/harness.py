"""Real servers for tests: `chat serve` in a subprocess on a free port, plus clients.

`ServerProcess` starts, stops (SIGTERM by default) and restarts a server on the
same port and database. `Api` wraps httpx for the HTTP side and creates users,
admins and bots. `connect()` opens a real WebSocket with the `websockets` package.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import websockets
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import ClientConnection

from chat.storage.models import Message, MessageChange, Room

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "test-secret-" + "x" * 32
_names = itertools.count(1)
# Limits that the suite as a whole would trip (every test registers from 127.0.0.1,
# module-wide users join many rooms quickly): lifted unless a test sets them (the
# limit tests do) or the environment does.
TEST_DEFAULTS: dict[str, Any] = {
    "registrations_per_ip": 1_000_000,
    "join_burst": 1000,
    "room_creations_per_user": 1_000_000,
    # Cheap argon2: about 100 users are registered and signed in per module.
    "password_hash_time_cost": 1,
    "password_hash_memory_kib": 1024,
    "password_hash_parallelism": 1,
    # Processes sharing Redis run their own tasks unless a test starts `chat worker`s
    # (`ServerPair(task_workers=N)`), as a site without workers would be set up.
    "run_tasks": "always",
}
# For the tests that measure hashing under load: the production cost.
REAL_HASHING: dict[str, Any] = {
    "password_hash_time_cost": 3,
    "password_hash_memory_kib": 64 * 1024,
    "password_hash_parallelism": 4,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unique(prefix: str = "u") -> str:
    """A short unique name (usernames are at most 32 characters)."""
    return f"{prefix}{next(_names)}_{uuid.uuid4().hex[:8]}"


class ChildProcess:
    """A `python -m chat ...` child process that writes its output to `log_path`."""

    proc: subprocess.Popen[bytes] | None
    log_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the process and wait for it to exit; returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ServerProcess(ChildProcess):
    """`python -m chat serve` as a child process with its own environment."""

    def __init__(
        self, database_url: str, workdir: Path, *, serve_args: Sequence[str] = (), **settings: Any
    ) -> None:
        settings.pop("task_workers", None)  # one process runs its tasks itself
        self.port = free_port()
        self.serve_args = list(serve_args)  # more `chat serve` options (`--workers 2`)
        self.workdir = workdir
        self.database_url = database_url
        self.env = {
            **os.environ,
            "CHAT_DATABASE_URL": database_url,
            "CHAT_JWT_SECRET": TEST_SECRET,
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("CHAT_REDIS_URL", None)
        for key, value in TEST_DEFAULTS.items():
            self.env.setdefault(f"CHAT_{key.upper()}", str(value))
        for key, value in settings.items():
            if value is None:  # `jwt_secret=None` runs the server without the variable
                self.env.pop(f"CHAT_{key.upper()}", None)
            else:
                self.env[f"CHAT_{key.upper()}"] = str(value)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"server-{self.port}.log"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chat", "serve", "--port", str(self.port), *self.serve_args],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.http}/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log()}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `chat ARGS` against this server's database."""
        return subprocess.run(
            [sys.executable, "-m", "chat", *args],
            cwd=self.workdir,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )


class WorkerProcess(ChildProcess):
    """`python -m chat worker` as a child process, with a server's environment."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str = "worker") -> None:
        self.env = dict(env)
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}-{uuid.uuid4().hex[:6]}.log"

    def start(self, timeout: float = 20.0) -> WorkerProcess:
        """Start it and wait until it takes jobs (its log says `ready`)."""
        log = self.log_path.open("ab")
        start = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chat", "worker"],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()}")
            if "task worker" in self.log()[start:] and " ready " in self.log()[start:]:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"worker did not start in {timeout}s:\n{self.log()}")


class ServerPair:
    """Two `chat serve` processes on one database and one Redis: a site of two nodes.

    Stands in for a `ServerProcess` in every end-to-end test (the `redis`
    backend): each new connection or HTTP client goes to the next node in turn
    (A, B, A, ...), so two clients of one test usually sit on different
    processes and anything that only works inside one process fails there.
    `proc`, `port` and `cli` are node A's; `start`, `stop` and `restart` act
    on both.

    `task_workers=N` also starts N `chat worker` processes (`workers`), and the
    nodes then run no task themselves (`CHAT_RUN_TASKS=never`): every task goes
    through the site's queue. They share one state dir (export files).
    """

    def __init__(
        self,
        database_url: str,
        workdir: Path,
        redis_url: str,
        *,
        task_workers: int = 0,
        **settings: Any,
    ) -> None:
        prefix = f"t{uuid.uuid4().hex[:10]}:"  # this site's keys and channels
        shared = {"redis_url": redis_url, "redis_prefix": prefix, **settings}
        if task_workers:
            shared.setdefault("run_tasks", "never")
            shared.setdefault("data_dir", workdir / "data")
        self.nodes = []
        for name in ("a", "b"):
            (workdir / name).mkdir(exist_ok=True)
            self.nodes.append(ServerProcess(database_url, workdir / name, **shared))
        self.workers = [
            WorkerProcess(self.nodes[0].env, workdir, f"worker{i}") for i in range(task_workers)
        ]
        self.database_url = database_url
        self.workdir = workdir
        self._turn = itertools.cycle(self.nodes)

    def _next(self) -> ServerProcess:
        return next(self._turn)

    @property
    def http(self) -> str:
        return self._next().http

    @property
    def ws(self) -> str:
        return self._next().ws

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.nodes[0].proc

    @property
    def env(self) -> dict[str, str]:
        return self.nodes[0].env

    def start(self, timeout: float = 20.0) -> ServerPair:
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                node.start(timeout)
        for worker in self.workers:
            if worker.proc is None or worker.proc.poll() is not None:
                worker.start(timeout)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        codes = [node.stop(sig, timeout) for node in self.nodes]
        for worker in self.workers:
            worker.stop(sig, timeout)
        return codes[0]

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        logs = [f"--- node {chr(97 + i)}\n{n.log()}" for i, n in enumerate(self.nodes)]
        logs += [f"--- worker {i}\n{w.log()}" for i, w in enumerate(self.workers)]
        return "\n".join(logs)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.nodes[0].cli(*args, stdin=stdin)


Server = ServerProcess | ServerPair


def nodes(server: Server) -> list[ServerProcess]:
    return list(server.nodes) if isinstance(server, ServerPair) else [server]


def metric(server: Server, sample: str) -> float:
    """A Prometheus sample (`name{labels}`) summed over the server's processes."""
    total = 0.0
    for node in nodes(server):
        for line in httpx.get(f"{node.http}/metrics").text.splitlines():
            if line.startswith(sample + " "):
                total += float(line.split(" ")[1])
    return total


def one_node(server: Server) -> ServerProcess:
    """A single process of `server` (the next node of a pair), for what is per process:
    its own origin, its own log."""
    return server._next() if isinstance(server, ServerPair) else server


@dataclass
class Account:
    id: int
    name: str
    password: str
    token: str
    refresh_token: str
    role: str = "user"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Api:
    """Synchronous HTTP helpers against a running server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.http, timeout=10)

    def login(self, name: str, password: str) -> dict[str, Any]:
        r = self.client.post("/api/auth/token", data={"username": name, "password": password})
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def user(self, name: str | None = None, password: str = "correct horse") -> Account:
        name = name or unique()
        r = self.client.post("/api/auth/register", json={"username": name, "password": password})
        assert r.status_code == 201, r.text
        tokens = self.login(name, password)
        return Account(
            r.json()["id"], name, password, tokens["access_token"], tokens["refresh_token"]
        )

    def admin(self, name: str | None = None, password: str = "admin password") -> Account:
        name = name or unique("a")
        done = self.server.cli(
            "users", "create", name, "--admin", "--password-stdin", stdin=password + "\n"
        )
        assert done.returncode == 0, done.stderr
        tokens = self.login(name, password)
        me = self.client.get(
            "/api/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        ).json()
        return Account(
            me["id"], name, password, tokens["access_token"], tokens["refresh_token"], "admin"
        )

    def bot(self, admin: Account, name: str | None = None) -> Account:
        r = self.client.post("/api/bots", json={"name": name or unique("b")}, headers=admin.headers)
        assert r.status_code == 201, r.text
        data = r.json()
        return Account(data["id"], data["name"], "", data["token"], "", "bot")

    def room(self, owner: Account, name: str | None = None, private: bool = False) -> str:
        name = name or unique("room")
        r = self.client.post(
            "/api/rooms", json={"name": name, "private": private}, headers=owner.headers
        )
        assert r.status_code == 201, r.text
        return name

    def history(self, account: Account, room: str, **params: Any) -> list[dict[str, Any]]:
        r = self.client.get(f"/api/rooms/{room}/messages", params=params, headers=account.headers)
        r.raise_for_status()
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    def close(self) -> None:
        self.client.close()


def all_messages(api: Api, account: Account, room: str) -> list[dict[str, Any]]:
    """Every message of a room, oldest first, paging forward with `after`."""
    out: list[dict[str, Any]] = []
    while True:
        page = api.history(account, room, after=out[-1]["seq"] if out else 0, limit=200)
        if not page:
            return out
        out.extend(page)


async def connect(
    server: Server, token: str | None = None, *, frame_auth: bool = False, **kwargs: Any
) -> ClientConnection:
    """Open /ws authenticated by header (default) or by a first `auth` frame; reads `hello`."""
    headers = dict(kwargs.pop("additional_headers", {}) or {})
    if token is not None and not frame_auth:
        headers["Authorization"] = f"Bearer {token}"
    # Unbounded: a test that leaves frames unread must not stall the closing
    # handshake (a full queue stops reading, so close() would wait 10 s).
    # Tests of clients that stop reading use `transport.pause_reading()`.
    kwargs.setdefault("max_queue", None)
    ws = await websockets.connect(server.ws, additional_headers=headers, **kwargs)
    if token is not None:
        if frame_auth:
            await ws.send(json.dumps({"type": "auth", "token": token}))
        hello = await recv(ws)
        assert hello["type"] == "hello", hello
    return ws


async def open_with_small_buffer(server: Server, token: str) -> ClientConnection:
    """A client whose socket takes little before TCP pushes back: stalls show up sooner."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    ws = await websockets.connect(
        server.ws,
        sock=sock,
        additional_headers={"Authorization": f"Bearer {token}"},
        ping_interval=None,
        max_size=None,
    )
    assert (await recv(ws))["type"] == "hello"
    return ws


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame as a dict."""
    raw = await asyncio.wait_for(ws.recv(), timeout)
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def recv_until(
    ws: ClientConnection, kind: str, timeout: float = 5.0, **match: Any
) -> dict[str, Any]:
    """Skip frames until one of `kind` (with the given field values) arrives."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError(f"no {kind} frame matching {match}")
        frame = await recv(ws, remaining)
        if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
            return frame


async def send(ws: ClientConnection, **frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def join(ws: ClientConnection, room: str, since: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "join", "room": room}
    if since is not None:
        frame["since"] = since
    await ws.send(json.dumps(frame))
    return await recv_until(ws, "joined", room=room)


async def owner_in_new_room(server: Server, api: Api) -> tuple[Account, str, ClientConnection]:
    """A new user, a new room of theirs, and a connection of theirs joined to it."""
    owner = api.user()
    room = api.room(owner)
    ws = await connect(server, owner.token)
    await join(ws, room)
    return owner, room, ws


async def say(ws: ClientConnection, room: str, body: str, ref: str | None = None) -> dict[str, Any]:
    """Send a message and return its ack (skipping other frames); an error for it fails."""
    ref = ref or uuid.uuid4().hex
    await ws.send(json.dumps({"type": "send", "room": room, "body": body, "ref": ref}))
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        frame = await recv(ws, deadline - asyncio.get_running_loop().time())
        if frame.get("ref") == ref and frame["type"] in ("ack", "error"):
            assert frame["type"] == "ack", f"send refused: {frame}"
            return frame


async def expect_no_frame(ws: ClientConnection, wait: float = 0.3, kind: str | None = None) -> None:
    """Assert that no frame (of `kind`, when given) arrives within `wait` seconds."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return
        try:
            frame = await recv(ws, remaining)
        except TimeoutError:
            return
        assert kind is not None and frame["type"] != kind, f"unexpected frame {frame}"


async def commit_unpublished_edit(
    server: Server, room: str, seq: int, body: str, at_seq: int
) -> int:
    """Edit the room's message `seq` in the database as a process would, and publish
    nothing: a process that died between its commit and its publish. Returns the
    change's version."""
    engine = create_async_engine(server.database_url)
    try:
        async with engine.begin() as conn:
            msg = (
                await conn.execute(
                    select(Message.id, Message.room_id, Message.user_id, Message.body)
                    .join(Room, Room.id == Message.room_id)
                    .where(Room.name == room, Message.seq == seq)
                )
            ).one()
            now = time.time()
            await conn.execute(
                update(Message).where(Message.id == msg.id).values(body=body, edited_at=now)
            )
            inserted = await conn.execute(
                insert(MessageChange)
                .values(
                    room_id=msg.room_id,
                    message_id=msg.id,
                    seq=seq,
                    at_seq=at_seq,
                    kind="edit",
                    user_id=msg.user_id,
                    old_body=msg.body,
                    new_body=body,
                    created_at=now,
                )
                .returning(MessageChange.id)
            )
            return int(inserted.scalar_one())
    finally:
        await engine.dispose()
