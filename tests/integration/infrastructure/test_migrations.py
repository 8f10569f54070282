"""Migrations upgrade, match the models, and downgrade, on both databases."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, inspect, text

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


def _check_names(connection: Connection) -> dict[str, set[str]]:
    found = inspect(connection)
    return {
        table: {check["name"] for check in found.get_check_constraints(table)}
        for table in found.get_table_names()
        if table != "alembic_version"
    }


def _model_check_names() -> dict[str, set[str]]:
    return {
        table.name: {
            str(constraint.name)
            for constraint in table.constraints
            if isinstance(constraint, CheckConstraint)
        }
        for table in Base.metadata.sorted_tables
    }


async def test_check_constraints_have_the_models_names(database_url: str) -> None:
    """compare_metadata does not compare CHECK constraints: a later migration dropping
    ``ck_job_runs_status`` would have met ``ck_job_runs_ck_job_runs_status``."""
    database = Database(database_url, DatabaseSettings())
    try:
        await migrate.upgrade(database)
        async with database.engine.connect() as connection:
            names = await connection.run_sync(_check_names)
    finally:
        await database.close()
    assert names == _model_check_names()


async def test_a_database_made_with_doubled_names_gets_the_models_names(
    empty_pg_url: str,
) -> None:
    """Databases created before the names were fixed held them twice prefixed; the
    upgrade renames them in place, and its downgrade puts them back."""
    database = Database(empty_pg_url, DatabaseSettings())
    try:
        await migrate.upgrade(database, "0005")
        async with database.engine.begin() as connection:
            for table, names in _model_check_names().items():
                for name in names:
                    await connection.execute(
                        text(f'ALTER TABLE "{table}" RENAME CONSTRAINT "{name}" '
                             f'TO "ck_{table}_{name}"')
                    )  # fmt: skip
        await migrate.upgrade(database)
        async with database.engine.connect() as connection:
            fixed = await connection.run_sync(_check_names)
        await migrate.downgrade(database, "0005")
        async with database.engine.connect() as connection:
            restored = await connection.run_sync(_check_names)
    finally:
        await database.close()
    assert fixed == _model_check_names()
    assert restored["job_runs"] == {
        "ck_job_runs_ck_job_runs_status",
        "ck_job_runs_ck_job_runs_source",
    }
