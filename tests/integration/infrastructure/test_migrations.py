"""Migrations upgrade, match the models, and downgrade, on both databases."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import Base

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

pytestmark = pytest.mark.anyio


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("empty_pg_url"))


async def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    """head creates exactly the models' schema; base removes it; head again works."""
    database = Database(database_url, DatabaseSettings())
    try:
        await _round_trip(database)
    finally:
        await database.close()


async def _round_trip(database: Database) -> None:
    await migrate.upgrade(database)
    assert await migrate.current_revision(database) == migrate.head_revision()
    async with database.engine.connect() as connection:
        assert "job_runs" in await connection.run_sync(_tables)
        assert await connection.run_sync(_diff) == []

    await migrate.downgrade(database, "base")
    assert await migrate.current_revision(database) is None
    async with database.engine.connect() as connection:
        assert "job_runs" not in await connection.run_sync(_tables)

    await migrate.upgrade(database)
    assert await migrate.current_revision(database) == migrate.head_revision()
