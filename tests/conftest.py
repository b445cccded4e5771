"""Fixtures: real servers on SQLite (default) or PostgreSQL (`CHAT_TEST_DATABASE_URL`),
on every backend: `server` and `make_server` are parametrized by `backend`, so each
end-to-end test runs against one process on the memory backend and against two
processes sharing Redis (`tests.harness.ServerPair`). `CHAT_TEST_BACKENDS` picks
which (default `memory,redis`; e.g. `redis` alone for the PostgreSQL run in CI).

Tests that need a service (PostgreSQL, Redis, Chromium) skip with a reason when
it is absent, except under `CHAT_REQUIRE_SERVICES=1` (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Api, Server, ServerPair, ServerProcess

TEST_DATABASE_URL = os.environ.get("CHAT_TEST_DATABASE_URL", "")
REQUIRE_SERVICES = os.environ.get("CHAT_REQUIRE_SERVICES") == "1"
BACKENDS = [b for b in os.environ.get("CHAT_TEST_BACKENDS", "memory,redis").split(",") if b]
if set(BACKENDS) - {"memory", "redis"}:
    raise RuntimeError(f"CHAT_TEST_BACKENDS: unknown backend in {BACKENDS!r}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out `two_nodes` tests on the memory backend (one process cannot run them),
    and `one_backend` tests on the redis backend when the memory backend runs them
    (deselected, not skipped: nothing is counted that did not run)."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec is not None else None
        needs_two = backend == "memory" and item.get_closest_marker("two_nodes")
        runs_elsewhere = (
            backend == "redis" and "memory" in BACKENDS and item.get_closest_marker("one_backend")
        )
        (drop if needs_two or runs_elsewhere else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def need_service(name: str, available: bool, why: str) -> None:
    """Skip (or, in CI, fail) when a service the test needs is missing."""
    if available:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{name} is required (CHAT_REQUIRE_SERVICES=1) but {why}")
    pytest.skip(f"{name} unavailable: {why}")


def _pg_admin(url: str, statement: str) -> None:
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    # A thread of its own: fixtures may be set up while a test's event loop runs.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


PG_URL = os.environ.get(
    "CHAT_TEST_PG_URL",
    TEST_DATABASE_URL or "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
)


def fresh_pg_database() -> str:
    """A new PostgreSQL database at `PG_URL`, whatever the suite's kind (the caller
    drops it, or leaves it to the throwaway server); skips or fails when absent."""
    try:
        _pg_admin(PG_URL, "SELECT 1")
    except Exception as exc:
        need_service("postgres", False, f"{PG_URL} does not answer: {exc!r}")
    name = f"chat_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(PG_URL, f'CREATE DATABASE "{name}"')
    base, _, _ = PG_URL.rpartition("/")
    return f"{base}/{name}"


class Databases:
    """Hands out empty databases: SQLite files, or fresh PostgreSQL databases."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.created: list[str] = []

    def new(self) -> str:
        if not TEST_DATABASE_URL:
            return f"sqlite+aiosqlite:///{self.tmp / f'chat-{uuid.uuid4().hex[:8]}.db'}"
        name = f"chat_test_{uuid.uuid4().hex[:12]}"
        _pg_admin(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"')
        self.created.append(name)
        base, _, _ = TEST_DATABASE_URL.rpartition("/")
        return f"{base}/{name}"

    def drop_all(self) -> None:
        for name in self.created:
            _pg_admin(TEST_DATABASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    dbs = Databases(tmp_path_factory.mktemp("db"))
    yield dbs
    dbs.drop_all()


ServerFactory = Callable[..., ServerProcess]
BackendServerFactory = Callable[..., Server]


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(name, marks=[pytest.mark.redis] if name == "redis" else [])
        for name in BACKENDS
    ],
)
def backend(request: pytest.FixtureRequest) -> str:
    """`memory`: one process; `redis`: two processes sharing one Redis and one database."""
    if request.param == "redis":
        from tests.redis_support import shared_redis_url

        shared_redis_url()  # skips, or fails in CI, when Redis is down
    name: str = request.param
    return name


def _server_for(
    backend: str | None, database_url: str, workdir: Path, settings: dict[str, Any]
) -> Server:
    """A pair sharing Redis for the `redis` backend, else one process."""
    if backend == "redis":
        from tests.redis_support import SHARED_REDIS_URL

        return ServerPair(database_url, workdir, SHARED_REDIS_URL, **settings)
    return ServerProcess(database_url, workdir, **settings)


class Servers:
    """Starts servers for one fixture scope (`make(database_url, **settings)`) and
    stops them when the scope ends. `backend=None`: single processes, whatever the
    backend, for tests that build their own topology (their own Redis, pairs)."""

    def __init__(
        self, databases: Databases, workdir: Callable[[], Path], backend: str | None
    ) -> None:
        self.databases = databases
        self.workdir = workdir
        self.backend = backend
        self.started: list[Server] = []

    def __call__(self, database_url: str | None = None, **settings: Any) -> Any:
        database = database_url or self.databases.new()
        server = _server_for(self.backend, database, self.workdir(), settings)
        self.started.append(server.start())
        return server

    def stop_all(self) -> Iterator[Servers]:
        yield self
        for server in self.started:
            server.stop()


@pytest.fixture(scope="module")
def module_servers(
    backend: str, databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    """Module-wide servers with custom settings, on the module's backend."""
    yield from Servers(databases, lambda: tmp_path_factory.mktemp("server"), backend).stop_all()


@pytest.fixture(scope="module")
def module_processes(
    databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    """Module-wide single processes, whatever the backend."""
    yield from Servers(databases, lambda: tmp_path_factory.mktemp("server"), None).stop_all()


@pytest.fixture(scope="module")
def server(module_servers: Servers) -> Server:
    """One server (or pair) per test module and backend; tests use unique names so
    they do not collide."""
    result: Server = module_servers()
    return result


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


def _numbered(tmp_path: Path) -> Callable[[], Path]:
    """server0, server1, ... under the test's own folder."""
    count = iter(range(1_000))

    def make() -> Path:
        folder = tmp_path / f"server{next(count)}"
        folder.mkdir()
        return folder

    return make


@pytest.fixture
def make_process(databases: Databases, tmp_path: Path) -> Iterator[Servers]:
    """Start single processes with custom settings, per test, whatever the backend."""
    yield from Servers(databases, _numbered(tmp_path), None).stop_all()


@pytest.fixture
def make_server(backend: str, databases: Databases, tmp_path: Path) -> Iterator[Servers]:
    """Start servers with custom settings (`make_server(heartbeat_interval=1)`), per test,
    on the module's backend."""
    yield from Servers(databases, _numbered(tmp_path), backend).stop_all()


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Headless Chromium for a module's browser tests, Playwright's `expect` waiting
    the module's `TIMEOUT` (ms; 10 s when it sets none)."""
    from tests.browser import launch_chromium  # Playwright only where a browser is used

    with launch_chromium(getattr(request.module, "TIMEOUT", 10_000)) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def web_api(web_server: Server) -> Iterator[Api]:
    """HTTP calls to the module's `web_server` (each browser test module defines one)."""
    client = Api(web_server)
    yield client
    client.close()
