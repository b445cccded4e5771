"""Fixtures: real servers on SQLite (default) or PostgreSQL (`CHAT_TEST_DATABASE_URL`).

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

from tests.harness import Api, ServerProcess

TEST_DATABASE_URL = os.environ.get("CHAT_TEST_DATABASE_URL", "")
REQUIRE_SERVICES = os.environ.get("CHAT_REQUIRE_SERVICES") == "1"


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


@pytest.fixture(scope="module")
def module_servers(
    databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerFactory]:
    started: list[ServerProcess] = []

    def make(database_url: str | None = None, **settings: Any) -> ServerProcess:
        server = ServerProcess(
            database_url or databases.new(), tmp_path_factory.mktemp("server"), **settings
        )
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> ServerProcess:
    """One server per test module; tests use unique names so they do not collide."""
    return module_servers()


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


@pytest.fixture
def make_server(databases: Databases, tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with custom settings (`make_server(heartbeat_interval=1)`), per test."""
    started: list[ServerProcess] = []

    def make(database_url: str | None = None, **settings: Any) -> ServerProcess:
        workdir = tmp_path / f"server{len(started)}"
        workdir.mkdir()
        server = ServerProcess(database_url or databases.new(), workdir, **settings)
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.stop()
