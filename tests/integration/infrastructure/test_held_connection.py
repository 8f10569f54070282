"""A kept connection's one-statement path (``HeldConnection.fetch``) on the real
PostgreSQL: each statement is its own transaction, and the driver's errors arrive as
the SQLAlchemy errors the writers already handle."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure.database import Database

pytestmark = pytest.mark.anyio


@pytest.fixture
async def database(pg_url: str) -> Database:
    db = Database(pg_url, DatabaseSettings())
    async with db.engine.begin() as connection:
        await connection.execute(
            text("CREATE TABLE IF NOT EXISTS held_probe (key text PRIMARY KEY, n int NOT NULL)")
        )
    yield db  # type: ignore[misc]
    await db.close()


async def _count(database: Database, key: str) -> int:
    async with database.engine.connect() as connection:
        found = await connection.scalar(
            text("SELECT count(*) FROM held_probe WHERE key = :key"), {"key": key}
        )
    return int(found or 0)


async def test_a_statement_commits_on_its_own_and_returns_its_rows(database: Database) -> None:
    held = database.hold(autocommit=True)
    key = uuid.uuid4().hex
    try:
        rows = await held.fetch(
            "INSERT INTO held_probe (key, n) VALUES ($1, $2) RETURNING key, n", key, 7
        )
        assert [tuple(row) for row in rows] == [(key, 7)]
        assert await _count(database, key) == 1  # visible to another connection: committed
        assert held.reused is False
        await held.fetch("SELECT 1")
        assert held.reused is True
    finally:
        await held.aclose()


async def test_refused_data_arrives_as_sqlalchemy_errors_and_the_next_statement_works(
    database: Database,
) -> None:
    held = database.hold(autocommit=True)
    key = uuid.uuid4().hex
    try:
        await held.fetch("INSERT INTO held_probe (key, n) VALUES ($1, 1)", key)
        with pytest.raises(IntegrityError) as duplicate:
            await held.fetch("INSERT INTO held_probe (key, n) VALUES ($1, 1)", key)
        assert duplicate.value.orig.sqlstate == "23505"  # type: ignore[union-attr]
        with pytest.raises(DataError) as bad:
            await held.fetch("SELECT $1::int / 0", 1)
        assert bad.value.orig.sqlstate == "22012"  # type: ignore[union-attr]
        with pytest.raises(DataError):  # a value the driver cannot encode
            await held.fetch("SELECT $1::int", "not a number")
        # Each failure discarded the connection; the next statement opens a new one.
        assert await held.fetch("SELECT n FROM held_probe WHERE key = $1", key) == [(1,)]
        assert held.reused is False
    finally:
        await held.aclose()


async def test_a_lost_connection_is_reported_invalidated_and_replaced(database: Database) -> None:
    held = database.hold(autocommit=True)
    observer = database.hold(autocommit=True)
    try:
        pid = (await held.fetch("SELECT pg_backend_pid()"))[0][0]
        await observer.fetch("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(OperationalError) as lost:
            await held.fetch("SELECT 1")
        assert lost.value.connection_invalidated is True
        assert held.reused is True  # what a writer checks before its one retry
        assert (await held.fetch("SELECT pg_backend_pid()"))[0][0] != pid
        assert held.reused is False
    finally:
        await held.aclose()
        await observer.aclose()


async def test_only_autocommit_connections_to_postgresql_take_single_statements(
    database: Database, sqlite_url: str
) -> None:
    in_transactions = database.hold()
    with pytest.raises(RuntimeError, match="autocommit"):
        await in_transactions.fetch("SELECT 1")
    sqlite = Database(sqlite_url, DatabaseSettings())
    held = sqlite.hold(autocommit=True)
    try:
        with pytest.raises(TypeError, match="asyncpg"):
            await held.fetch("SELECT 1")
    finally:
        await held.aclose()
        await sqlite.close()
