"""The pieces of bench/hotpath: cores, processes, servers, accounts, the Node load generator.

Everything here is bounded in time: a server that does not start, a generator
that does not report or a socket that does not open ends in a `BenchError` (or a
partial result saying how far it got), never in a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
LOADGEN = HERE / "loadgen"
BENCH_SECRET = "bench-hotpath-secret-" + "k" * 32
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Every limit that would cap a measurement, raised through its documented setting
# (docs/operations.md). Persistence, authentication, heartbeats, presence grace and
# every check stay as they are in production.
RAISED_LIMITS: dict[str, Any] = {
    "send_rate": 1e9,
    "send_burst": 1_000_000_000,
    "bot_send_rate": 1e9,
    "bot_send_burst": 1_000_000_000,
    "typing_rate": 1e9,
    "typing_burst": 1_000_000_000,
    "join_rate": 1e9,
    "join_burst": 1_000_000_000,
    "rate_limit_close_after": 1_000_000_000,
    "max_connections_per_user": 1_000_000,
    "handshakes_per_ip_per_second": 1e9,
    "handshakes_per_ip_burst": 1_000_000_000,
    "outbound_queue_size": 100_000,
    "room_creations_per_user": 1_000_000,
    "max_rooms_per_user": 1_000_000,
    "registrations_per_ip": 1_000_000_000,
    "hash_queue_max": 100_000,
    # Cheap argon2 for the setup's registrations and sign-ins (not measured).
    "password_hash_time_cost": 1,
    "password_hash_memory_kib": 1024,
    "password_hash_parallelism": 1,
    # Tokens outlive the longest run; the drain on SIGTERM is short.
    "access_token_ttl": 24 * 3600,
    "drain_timeout": 3,
}


class BenchError(Exception):
    """A run that could not be measured (the message says why)."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- cores and /proc ----------------------------------------------------------------


@dataclass
class Pinning:
    server: list[int]
    load: list[int]
    taskset: str | None

    @property
    def active(self) -> bool:
        return self.taskset is not None

    def prefix(self, cores: list[int]) -> list[str]:
        if self.taskset is None or not cores:
            return []
        return [self.taskset, "-c", ",".join(map(str, cores))]

    def describe(self) -> str:
        if not self.active:
            return "not pinned (taskset missing, fewer than 2 cores or --no-pin)"
        return f"server on core(s) {self.server}, load on core(s) {self.load} (taskset)"


def pinning(enabled: bool) -> Pinning:
    """Server on the first allowed core, everything else (load, this script) on the rest."""
    allowed = sorted(os.sched_getaffinity(0))
    taskset = shutil.which("taskset")
    if not enabled or taskset is None or len(allowed) < 2:
        return Pinning(allowed, allowed, None)
    return Pinning(allowed[:1], allowed[1:], taskset)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def core_times() -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies per core from /proc/stat: busy counts every process and
    the kernel's own work (loopback TCP runs in softirq time, charged to no process)."""
    out: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = [int(x) for x in values[:8]]
            total = sum(v)
            out[int(name[3:])] = (total - v[3] - v[4], total)
    return out


def busy_pct(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cores: list[int]
) -> float | None:
    """How busy `cores` were between two `core_times()` samples, in % of one core each."""
    busy = sum(after[c][0] - before[c][0] for c in cores if c in before and c in after)
    total = sum(after[c][1] - before[c][1] for c in cores if c in before and c in after)
    return busy / total * 100 if total else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- latency histograms (the generator's buckets) -------------------------------------


class Hist:
    """Merged histogram of microsecond latencies: 10 us buckets under 1 ms, then 2 %."""

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.n = 0
        self.max_us = 0.0

    @classmethod
    def merged(cls, parts: Iterable[dict[str, Any]]) -> Hist:
        h = cls()
        for part in parts:
            h.add(part)
        return h

    def add(self, part: dict[str, Any]) -> None:
        for key, count in part.get("buckets", {}).items():
            self.buckets[int(key)] = self.buckets.get(int(key), 0) + int(count)
        self.n += int(part.get("n", 0))
        self.max_us = max(self.max_us, float(part.get("max_us", 0.0)))

    @staticmethod
    def value_us(index: int) -> float:
        if index < 100:
            return (index + 0.5) * 10.0
        return 1000.0 * 1.02 ** (index - 100 + 0.5)

    def pct_ms(self, q: float) -> float | None:
        """The q-quantile in milliseconds (None when empty)."""
        if self.n == 0:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(self.value_us(index), self.max_us) / 1000.0
        return self.max_us / 1000.0


# --- child processes ------------------------------------------------------------------

_children: dict[int, subprocess.Popen[bytes] | asyncio.subprocess.Process] = {}


try:
    _LIBC: Any = ctypes.CDLL(None)
except OSError:
    _LIBC = None
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child before exec: SIGKILL when the thread that started it ends, so
    nothing is left running if this script is killed (Linux; best effort; no imports
    or locks here, it runs between fork and exec)."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_children() -> None:
    """Kill every process this script started and that is still running (by pid)."""
    for pid, proc in list(_children.items()):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _children.pop(pid, None)


class Server:
    """A server process pinned to the server core, with its log in `workdir`."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        workdir: Path,
        env: dict[str, str],
        pin: Pinning,
        port: int,
    ) -> None:
        self.name = name
        self.argv = pin.prefix(pin.server) + argv
        self.workdir = workdir
        self.env = env
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}-{port}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        """Start the process (call from the main thread: see `die_with_parent`)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        _children[self.proc.pid] = self.proc

    def start(self, timeout: float = 30.0, health: str | None = None) -> Server:
        self.spawn()
        return self.wait_ready(timeout, health)

    async def astart(self, timeout: float = 30.0, health: str | None = None) -> Server:
        self.spawn()
        return await asyncio.to_thread(self.wait_ready, timeout, health)

    def wait_ready(self, timeout: float, health: str | None) -> Server:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                if health is None:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return self
                elif httpx.get(self.http_url + health, timeout=1.0).status_code == 200:
                    return self
            except (OSError, httpx.HTTPError):
                pass
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"{self.name} did not start in {timeout:g} s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; never raises (a loaded machine can take
        a while to reap a process)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    log(f"{self.name} (pid {self.proc.pid}) did not exit 30 s after SIGKILL")
                    return  # stays in _children: kill_children tries again
        _children.pop(self.proc.pid, None)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


async def start_baseline(workdir: Path, pin: Pinning, loop: str) -> Server:
    port = free_port()
    argv = [sys.executable, str(HERE / "baseline_server.py"), "--port", str(port), "--loop", loop]
    return await Server("baseline", argv, workdir, dict(os.environ), pin, port).astart()


async def start_ceiling(workdir: Path, pin: Pinning) -> Server:
    port = free_port()
    argv = [node_binary(), str(LOADGEN / "ceiling_server.js"), str(port)]
    return await Server("ceiling", argv, workdir, dict(os.environ), pin, port).astart()


# --- the chat server --------------------------------------------------------------------


@dataclass
class Account:
    id: int
    name: str
    token: str


@dataclass
class ChatServer:
    server: Server
    database_url: str
    settings: dict[str, Any]
    admin: Account | None = None
    http: httpx.AsyncClient | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    async def close(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        self.server.stop()

    def headers(self) -> dict[str, str]:
        assert self.admin is not None
        return {"Authorization": f"Bearer {self.admin.token}"}


def chat_env(database_url: str, workdir: Path, overrides: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    settings = {**RAISED_LIMITS, **overrides}
    env.update({f"CHAT_{k.upper()}": str(v) for k, v in settings.items()})
    env["CHAT_DATABASE_URL"] = database_url
    env["CHAT_JWT_SECRET"] = BENCH_SECRET
    env["CHAT_DATA_DIR"] = str(workdir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def start_chat(
    workdir: Path, database_url: str, pin: Pinning, overrides: dict[str, Any], seeding: str
) -> ChatServer:
    """`chat serve` from this checkout on a fresh database, with an admin ready."""
    port = free_port()
    env = chat_env(database_url, workdir, overrides)
    argv = [sys.executable, "-m", "chat", "serve", "--port", str(port)]
    server = Server("chat", argv, workdir, env, pin, port)
    await server.astart(60.0, "/healthz")
    chat = ChatServer(server, database_url, {**RAISED_LIMITS, **overrides})
    chat.http = httpx.AsyncClient(base_url=server.http_url, timeout=30.0)
    try:
        if seeding == "db":
            (chat.admin,) = await seed_accounts_db(
                chat, [f"benchadmin{uuid.uuid4().hex[:6]}"], "admin"
            )
        else:
            chat.admin = await admin_via_cli(chat)
    except BenchError:
        await chat.close()
        raise
    return chat


@functools.cache
def _token_service() -> Any:
    from chat.auth.tokens import TokenService

    return TokenService(BENCH_SECRET, "HS256", 24 * 3600.0, 24 * 3600.0)


def mint(user_id: int, role: str) -> str:
    """An access token signed with the bench secret, as `POST /api/auth/token` issues."""
    token, _ = _token_service().issue(user_id, role, "access", 0, ttl=12 * 3600.0)
    return str(token)


async def seed_accounts_db(chat: ChatServer, names: Sequence[str], role: str) -> list[Account]:
    """Insert users straight into the server's database (as tests/dbseed.py does) and mint
    their access tokens: thousands in a second, where argon2 registration takes minutes."""
    from sqlalchemy import insert, select
    from sqlalchemy.ext.asyncio import create_async_engine

    from chat.storage.models import User
    from chat.storage.rules import normalize_username

    rows = []
    for name in names:
        display, key = normalize_username(name)
        rows.append(
            {
                "username": display,
                "username_key": key,
                "password_hash": None,
                "role": role,
                "token_version": 0,
                "banned": False,
                "created_at": time.time(),
            }
        )
    engine = create_async_engine(chat.database_url)
    try:
        async with engine.begin() as conn:
            for start in range(0, len(rows), 2000):
                await conn.execute(insert(User), rows[start : start + 2000])
        async with engine.connect() as conn:
            found: dict[str, int] = {}
            wanted = [r["username"] for r in rows]
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                result = await conn.execute(
                    select(User.username, User.id).where(User.username.in_(chunk))
                )
                found.update({name: uid for name, uid in result.all()})
    except Exception as exc:
        raise BenchError(f"seeding users in the database failed: {exc!r}") from exc
    finally:
        await engine.dispose()
    return [Account(found[n], n, mint(found[n], role)) for n in (r["username"] for r in rows)]


async def admin_via_cli(chat: ChatServer) -> Account:
    """The documented way: `chat users create NAME --admin --password-stdin`, then sign in."""
    name = f"benchadmin{uuid.uuid4().hex[:6]}"
    password = "bench admin password"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chat", "users", "create", name, "--admin", "--password-stdin"],
        input=password + "\n",
        env=chat.server.env,
        cwd=chat.server.workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise BenchError(f"chat users create failed: {done.stderr[-2000:]}")
    return await login(chat, name, password)


async def login(chat: ChatServer, name: str, password: str) -> Account:
    assert chat.http is not None
    r = await chat.http.post("/api/auth/token", data={"username": name, "password": password})
    if r.status_code != 200:
        raise BenchError(f"sign-in of {name} failed: {r.status_code} {r.text[:200]}")
    token = r.json()["access_token"]
    me = await chat.http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    return Account(me.json()["id"], name, token)


async def seed_accounts_http(chat: ChatServer, names: Sequence[str]) -> list[Account]:
    """Register and sign in each user over HTTP (slow: two argon2 hashes each)."""
    assert chat.http is not None
    http = chat.http
    password = "bench password"
    sem = asyncio.Semaphore(8)

    async def one(name: str) -> Account:
        async with sem:
            for _ in range(50):
                r = await http.post(
                    "/api/auth/register", json={"username": name, "password": password}
                )
                if r.status_code == 201:
                    break
                if r.status_code in (429, 503):
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                    continue
                raise BenchError(f"registering {name}: {r.status_code} {r.text[:200]}")
            return await login(chat, name, password)

    return list(await asyncio.gather(*(one(n) for n in names)))


async def seed_users(chat: ChatServer, count: int, seeding: str) -> list[Account]:
    prefix = f"b{uuid.uuid4().hex[:6]}_"
    names = [f"{prefix}{i}" for i in range(count)]
    started = time.monotonic()
    if seeding == "db":
        accounts = await seed_accounts_db(chat, names, "user")
    else:
        accounts = await seed_accounts_http(chat, names)
    log(f"  {count} users ready ({seeding}) in {time.monotonic() - started:.1f} s")
    return accounts


async def create_rooms(chat: ChatServer, names: Sequence[str]) -> None:
    assert chat.http is not None
    http = chat.http
    sem = asyncio.Semaphore(8)

    async def one(name: str) -> None:
        async with sem:
            r = await http.post("/api/rooms", json={"name": name}, headers=chat.headers())
            if r.status_code != 201:
                raise BenchError(f"creating room {name}: {r.status_code} {r.text[:200]}")

    await asyncio.gather(*(one(n) for n in names))


async def stored_messages(chat: ChatServer, rooms: set[str]) -> int:
    """Sum of `last_seq` over the given rooms (`GET /api/rooms`)."""
    assert chat.http is not None
    r = await chat.http.get("/api/rooms", headers=chat.headers())
    r.raise_for_status()
    return sum(int(item["last_seq"]) for item in r.json()["items"] if item["name"] in rooms)


async def presence(chat: ChatServer) -> list[dict[str, Any]]:
    assert chat.http is not None
    r = await chat.http.get("/api/admin/presence", headers=chat.headers())
    r.raise_for_status()
    rooms: list[dict[str, Any]] = r.json()["rooms"]
    return [room for room in rooms if room.get("users")]


# --- PostgreSQL -----------------------------------------------------------------------


class PgDatabase:
    """A throwaway database on the configured PostgreSQL server."""

    def __init__(self, admin_url: str) -> None:
        # admin_url: postgresql+asyncpg://user@host:port/db (any existing database)
        self.admin_url = admin_url
        self.name = f"bench_hotpath_{uuid.uuid4().hex[:10]}"
        base, _, _ = admin_url.rpartition("/")
        self.url = f"{base}/{self.name}"

    def _dsn(self) -> str:
        return self.admin_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    async def create(self) -> str:
        import asyncpg

        try:
            conn = await asyncio.wait_for(asyncpg.connect(self._dsn()), 10)
        except Exception as exc:
            raise BenchError(f"PostgreSQL at {self.admin_url} is not reachable: {exc!r}") from exc
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()
        return self.url

    async def drop(self) -> None:
        import asyncpg

        with contextlib.suppress(Exception):
            conn = await asyncio.wait_for(asyncpg.connect(self._dsn()), 10)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            finally:
                await conn.close()


# --- the Node load generator --------------------------------------------------------------


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise BenchError("node is not installed (Node.js 18 or later is needed for the load)")
    return node


def ensure_loadgen() -> None:
    """`npm ci` when node_modules is missing (the lock file pins `ws`)."""
    if (LOADGEN / "node_modules" / "ws" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise BenchError("npm is not installed: cannot install the load generator's `ws`")
    log("installing the load generator (npm ci)")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=LOADGEN,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise BenchError(f"npm ci failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


class LoadGen:
    """One Node process: JSON-line events out, JSON-line commands in."""

    def __init__(self, spec: dict[str, Any], workdir: Path, pin: Pinning, index: int) -> None:
        self.spec = {**spec, "proc": index}
        self.index = index
        self.spec_path = workdir / f"loadgen-{uuid.uuid4().hex[:8]}.json"
        self.stderr_path = self.spec_path.with_suffix(".stderr")
        self.argv = [*pin.prefix(pin.load), node_binary(), str(LOADGEN / "loadgen.js")]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.spec_path.write_text(json.dumps(self.spec))
        with self.stderr_path.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                str(self.spec_path),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                limit=256 * 1024 * 1024,
                preexec_fn=die_with_parent,
            )
        _children[self.proc.pid] = self.proc

    async def event(self, timeout: float, *kinds: str) -> dict[str, Any]:
        """The next event of one of `kinds` (others, like "bucket", are returned too if asked)."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(
                    f"load generator {self.index}: no {'/'.join(kinds)} in {timeout:g} s"
                )
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            except TimeoutError:
                continue
            if not line:
                await self.proc.wait()
                raise BenchError(
                    f"load generator {self.index} exited ({self.proc.returncode}): "
                    f"{self.stderr_tail()}"
                )
            event: dict[str, Any] = json.loads(line)
            if event.get("event") == "fatal":
                raise BenchError(f"load generator {self.index} failed: {event.get('error')}")
            if event.get("event") in kinds:
                return event

    def command(self, cmd: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                self.command({"cmd": "quit"})
                await asyncio.wait_for(self.proc.wait(), 10)
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        _children.pop(self.proc.pid, None)
        with contextlib.suppress(OSError):
            self.spec_path.unlink()

    def stderr_tail(self) -> str:
        if not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(errors="replace")[-2000:]


class LoadGroup:
    """Several generator processes sharing one job; `conns` are dealt out round robin."""

    def __init__(
        self,
        base: dict[str, Any],
        conns: list[dict[str, Any]] | None,
        procs: int,
        workdir: Path,
        pin: Pinning,
    ) -> None:
        self.gens = []
        for i in range(procs):
            spec = dict(base)
            if conns is not None:
                spec["conns"] = conns[i::procs]
            self.gens.append(LoadGen(spec, workdir, pin, i))

    async def start(self, timeout: float) -> list[dict[str, Any]]:
        for gen in self.gens:
            await gen.start()
        return list(await asyncio.gather(*(g.event(timeout, "ready") for g in self.gens)))

    def command(self, cmd: dict[str, Any]) -> None:
        for gen in self.gens:
            gen.command(cmd)

    async def gather(self, timeout: float, *kinds: str) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(g.event(timeout, *kinds) for g in self.gens)))

    async def stop(self) -> None:
        await asyncio.gather(*(g.stop() for g in self.gens))


def start_ns(delay: float = 0.3) -> str:
    """A CLOCK_MONOTONIC instant shortly ahead, which every generator process waits for."""
    return str(time.monotonic_ns() + int(delay * 1e9))
