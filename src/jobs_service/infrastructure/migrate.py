"""Schema migrations through Alembic, on the service's own async engine."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection

    from jobs_service.infrastructure.database import Database

__all__ = ["current_revision", "downgrade", "head_revision", "known_revisions", "upgrade"]

_SCRIPTS = Path(__file__).parent / "migrations"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The newest revision shipped with this version."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        msg = "no migrations found"
        raise RuntimeError(msg)
    return head


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision shipped with this version, the head included."""
    scripts = ScriptDirectory.from_config(_config())
    return frozenset(script.revision for script in scripts.walk_revisions())


async def upgrade(database: Database, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` (default: the newest)."""
    async with _migrating(database) as connection:
        await connection.run_sync(lambda sync: command.upgrade(_config(sync), revision))


async def downgrade(database: Database, revision: str) -> None:
    """Downgrade the schema to ``revision`` (``base`` removes every table)."""
    async with _migrating(database) as connection:
        await connection.run_sync(lambda sync: command.downgrade(_config(sync), revision))


async def current_revision(database: Database) -> str | None:
    """The revision the database is at, or None for an empty database."""
    async with database.engine.connect() as connection:
        return await connection.run_sync(_revision)


@contextlib.asynccontextmanager
async def _migrating(database: Database) -> AsyncIterator[AsyncConnection]:
    """A connection in one transaction for the migrations.

    On SQLite, foreign keys are not enforced during it, as SQLite's procedure for
    rebuilding a table asks (https://www.sqlite.org/lang_altertable.html#otheralter):
    a batch migration copies a table, drops the original and renames the copy, and
    dropping ``schedules`` while they are enforced would delete every
    ``schedule_fires`` row (``ON DELETE CASCADE``). The pragma only takes effect outside
    a transaction, so it is set before this one begins; if the revision changed, the
    foreign keys are checked before the commit (a violation rolls everything back).
    They are enforced again afterwards.
    """
    async with database.engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            async with connection.begin():
                yield connection
            return
        enforced = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar_one()
        await connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
        await connection.commit()
        try:
            async with connection.begin():
                before = await connection.run_sync(_revision)
                yield connection
                if await connection.run_sync(_revision) != before:
                    await _check_foreign_keys(connection)
        finally:
            await connection.exec_driver_sql(f"PRAGMA foreign_keys = {'ON' if enforced else 'OFF'}")
            await connection.commit()


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def _check_foreign_keys(connection: AsyncConnection) -> None:
    violations = (await connection.exec_driver_sql("PRAGMA foreign_key_check")).all()
    if violations:
        tables = ", ".join(sorted({str(row[0]) for row in violations}))
        msg = f"the migration left rows whose parent row is missing in {tables}"
        raise CommandError(msg)
