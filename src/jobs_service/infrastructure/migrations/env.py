"""Alembic environment.

``jobsctl migrate`` hands in a connection of the service's own engine
(``config.attributes["connection"]``); the plain ``alembic`` CLI, used by developers to
write revisions, connects to ``JOBS_DATABASE_URL`` itself.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from jobs_service.core.settings import DEFAULT_DATABASE_URL
from jobs_service.infrastructure.models import Base

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(_configure_and_run)
        await connection.commit()
    await engine.dispose()


def run() -> None:
    """Run migrations on the handed-in connection, or on ``JOBS_DATABASE_URL``."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    if context.is_offline_mode():
        context.configure(
            url=os.environ.get("JOBS_DATABASE_URL", DEFAULT_DATABASE_URL),
            target_metadata=target_metadata,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_with_own_engine(os.environ.get("JOBS_DATABASE_URL", DEFAULT_DATABASE_URL)))


run()
