"""The Alembic migrations build exactly the schema the ORM models describe, and go
down and up again: on the suite's database (SQLite, or PostgreSQL in CI's second run)."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from chat.storage.migrate import alembic_config, upgrade
from chat.storage.models import Base
from chat.storage.search import is_search_object
from tests.conftest import Databases


def _schema_diff(url: str) -> list[Any]:
    def compare(conn: Connection) -> list[Any]:
        # Search's FTS5 table and tsvector column exist on one dialect each, outside the
        # models (migration 0005_search); the rest must match exactly.
        opts = {
            "compare_type": True,
            "include_name": lambda name, type_, parents: not is_search_object(name),
        }
        context = MigrationContext.configure(conn, opts=opts)
        return list(compare_metadata(context, Base.metadata))

    async def run() -> list[Any]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(compare)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_migrations_match_the_models_and_round_trip(databases: Databases) -> None:
    url = databases.new()
    upgrade(url)
    assert _schema_diff(url) == []
    command.downgrade(alembic_config(url), "base")
    upgrade(url)
    assert _schema_diff(url) == []
