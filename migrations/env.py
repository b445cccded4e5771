"""Alembic environment: async engine, batch mode for SQLite's limited ALTER."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from chat.config import Settings
from chat.storage.models import Base
from chat.storage.search import is_search_object

target_metadata = Base.metadata


def _url() -> str:
    url = context.config.attributes.get("database_url")
    return url if isinstance(url, str) else Settings().database_url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # The search index is dialect-specific SQL the models leave out (0005_search).
        include_name=lambda name, type_, parents: not is_search_object(name),
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
