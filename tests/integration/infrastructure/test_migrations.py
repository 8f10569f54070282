"""Migrations upgrade, match the models, and downgrade, on both databases."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, delete, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import (
    AuditEntry,
    Base,
    Delivery,
    JobRun,
    RunAttempt,
    Schedule,
    ScheduleFire,
    WebhookEvent,
)

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


_AT = "'2026-12-01 00:00:00'"


def _insert(table: str, columns: str, *rows: str) -> str:
    """An INSERT of fixed rows, written as SQL literals both databases read alike."""
    return f"INSERT INTO {table} ({columns}) VALUES ({'), ('.join(rows)})"  # noqa: S608 - test data


def _schedule(name: str, source: str) -> str:
    return f"'{name}', 'count_items', '{{}}', 'interval', 60, {_AT}, '{source}', {_AT}, {_AT}"


def _run(run_id: str, source: str, schedule_id: str = "NULL", event_id: str = "NULL") -> str:
    task = "'count_items', '{}', 'succeeded'"
    return f"'{run_id}', {task}, '{source}', {schedule_id}, {event_id}, {_AT}"


def _audit(action: str, target: str, outcome: int) -> str:
    return f"{_AT}, 'ops', '{action}', '{target}', {outcome}"


#: A history written at revision 0007 (plain SQL: the models describe the newest schema).
#: Schedules 2 and 3 and event 2 are deleted: 3, the newest schedule, is still named by
#: its run; 2 and event 2, the newest event, only by the audit log. Refused actions on
#: ids that never existed are no evidence of anything.
_HISTORY_AT_0007 = (
    _insert(
        "schedules",
        "name, task, kwargs, kind, interval_s, anchor_at, source, created_at, updated_at",
        _schedule("kept", "api"),
        _schedule("deleted-by-api", "api"),
        _schedule("label-removed", "label"),
    ),
    _insert(
        "schedule_fires",
        "schedule_id, fire_time, outcome, claimed_by, claimed_at",
        f"1, {_AT}, 'enqueued', 'scheduler:1', {_AT}",
    ),
    _insert(
        "webhook_events",
        "source, external_id, headers, body, task, status, received_at, updated_at",
        f"'github', 'kept', '{{}}', '', 'count_items', 'processed', {_AT}, {_AT}",
        f"'github', 'replayed', '{{}}', '', 'count_items', 'processed', {_AT}, {_AT}",
    ),
    _insert(
        "job_runs",
        "run_id, task, kwargs, status, source, schedule_id, webhook_event_id, queued_at",
        _run("r1", "schedule", schedule_id="3"),
        _run("r2", "webhook", event_id="1"),
        _run("r3", "api"),
    ),
    _insert("run_attempts", "run_id, attempt, status", "'r3', 1, 'failed'"),
    _insert(
        "deliveries",
        "run_id, channel, target, status, idempotency_key, created_at, updated_at",
        f"'r3', 'email', 'a@b.c', 'sent', 'k1', {_AT}, {_AT}",
    ),
    _insert(
        "audit_log",
        "at, actor, action, target, outcome",
        _audit("POST /v1/schedules", "2", 201),
        _audit("DELETE /v1/schedules/{schedule_id}", "2", 204),
        _audit("DELETE /v1/schedules/{schedule_id}", "999", 404),
        _audit("POST /v1/webhooks/events/{event_id}/replay", "2", 202),
        _audit("jobsctl webhooks replay", "998", 1),
    ),
    "DELETE FROM schedules WHERE id IN (2, 3)",
    "DELETE FROM webhook_events WHERE id = 2",
)

#: The next id of each table after the upgrade: above every id its rows, or other rows
#: that name it, show was handed out.
_NEXT_IDS = {
    "schedule_fires": 2,
    "schedules": 4,
    "webhook_events": 3,
    "job_runs": 4,
    "run_attempts": 2,
    "deliveries": 2,
    "audit_log": 6,
}


#: Fires before their schedule, which takes them with it.
_REINSERTED = (ScheduleFire, Schedule, WebhookEvent, JobRun, RunAttempt, Delivery, AuditEntry)


def _schema(connection: Connection) -> dict[str, dict[str, object]]:
    """Indexes (partial ones with their condition), unique, foreign key and CHECK
    constraints of every table, by name."""
    found = inspect(connection)
    return {
        table: {
            "indexes": {
                index["name"]: (
                    tuple(index["column_names"]),
                    index["unique"],
                    {key: str(value) for key, value in index.get("dialect_options", {}).items()},
                )
                for index in found.get_indexes(table)
            },
            "unique": {
                unique["name"]: tuple(unique["column_names"])
                for unique in found.get_unique_constraints(table)
            },
            "foreign keys": {
                key["name"]: (key["referred_table"], tuple(key["referred_columns"]), key["options"])
                for key in found.get_foreign_keys(table)
            },
            "checks": {
                check["name"]: check["sqltext"] for check in found.get_check_constraints(table)
            },
        }
        for table in found.get_table_names()
        if table != "alembic_version"
    }


def _rows(connection: Connection) -> dict[str, list[tuple[object, ...]]]:
    return {
        table.name: [
            tuple(row)
            for row in connection.exec_driver_sql(f"SELECT * FROM {table.name} ORDER BY id")  # noqa: S608 - the models' table names
        ]
        for table in Base.metadata.sorted_tables
    }


def _autoincrement(connection: Connection) -> dict[str, bool]:
    """Which SQLite tables hand out their ids with AUTOINCREMENT."""
    tables = connection.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite%' AND name <> 'alembic_version'"
    )
    return {name: "AUTOINCREMENT" in sql for name, sql in tables}


def _reinsert_newest(connection: Connection, model: type[Base]) -> tuple[int, int]:
    """Delete the row with the largest id and insert it again; both ids."""
    table = model.__table__
    row = connection.execute(select(table).order_by(table.c.id.desc()).limit(1)).one()
    connection.execute(delete(table).where(table.c.id == row.id))
    values = {key: value for key, value in row._asdict().items() if key != "id"}
    new_id = connection.execute(insert(table).values(values).returning(table.c.id)).scalar_one()
    return row.id, new_id


async def test_an_upgraded_database_never_hands_out_an_id_twice(database_url: str) -> None:
    """Upgrading a database with history keeps its rows, indexes and constraints; from
    then on no table hands out an id again, not even one whose row was deleted before
    the upgrade but is still named by a run or the audit log (on SQLite, AUTOINCREMENT;
    PostgreSQL's sequences always did this). The downgrade gives back the old tables."""
    database = Database(database_url, DatabaseSettings())
    try:
        await migrate.upgrade(database, "0007")
        async with database.engine.begin() as connection:
            for statement in _HISTORY_AT_0007:
                await connection.exec_driver_sql(statement)
        async with database.engine.connect() as connection:
            schema_before = await connection.run_sync(_schema)
            rows_before = await connection.run_sync(_rows)

        await migrate.upgrade(database, "0008")
        async with database.engine.connect() as connection:
            assert await connection.run_sync(_schema) == schema_before
            assert await connection.run_sync(_rows) == rows_before
            assert await connection.run_sync(_check_names) == _model_check_names()
        await migrate.upgrade(database)  # the later revisions, for the models' columns
        await _check_constraints_hold(database)
        async with database.engine.begin() as connection:
            ids = {
                model.__tablename__: await connection.run_sync(_reinsert_newest, model)
                for model in _REINSERTED
            }
            fires_left = (await connection.execute(select(ScheduleFire.id))).all()
        assert {table: new for table, (_, new) in ids.items()} == _NEXT_IDS
        assert fires_left == []  # deleting the schedule deleted its fires (ON DELETE CASCADE)

        await migrate.downgrade(database, "0008")
        async with database.engine.connect() as connection:
            rows_upgraded = await connection.run_sync(_rows)
            if connection.dialect.name == "sqlite":  # later downgrades keep AUTOINCREMENT
                assert all((await connection.run_sync(_autoincrement)).values())
        await migrate.downgrade(database, "0007")
        async with database.engine.connect() as connection:
            assert await connection.run_sync(_schema) == schema_before
            assert await connection.run_sync(_rows) == rows_upgraded
            if connection.dialect.name == "sqlite":
                assert not any((await connection.run_sync(_autoincrement)).values())
        await migrate.upgrade(database)
        assert await migrate.current_revision(database) == migrate.head_revision()
    finally:
        await database.close()


async def _check_constraints_hold(database: Database) -> None:
    """A CHECK constraint of each rebuilt table still refuses what it refused."""
    refused = (
        "UPDATE schedules SET kind = 'weekly'",
        "UPDATE schedule_fires SET outcome = 'lost'",
        "UPDATE job_runs SET status = 'lost'",
        "UPDATE webhook_events SET status = 'lost'",
        "UPDATE deliveries SET channel = 'fax'",
        "UPDATE run_attempts SET status = 'lost'",
    )
    for statement in refused:
        with pytest.raises(IntegrityError):
            async with database.engine.begin() as connection:
                await connection.exec_driver_sql(statement)


async def test_ids_come_from_autoincrement_or_a_sequence(database_url: str) -> None:
    """Every table's id is handed out by something that never gives one twice:
    AUTOINCREMENT on SQLite (the models say so, and the migrations make it so; the
    comparison of schemas does not look at it), a sequence on PostgreSQL."""
    database = Database(database_url, DatabaseSettings())
    try:
        await migrate.upgrade(database)
        async with database.engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                found = await connection.run_sync(_autoincrement)
            else:
                sequences = {
                    table.name: (
                        await connection.execute(
                            text("SELECT pg_get_serial_sequence(:table, 'id')"),
                            {"table": table.name},
                        )
                    ).scalar()
                    for table in Base.metadata.sorted_tables
                }
                found = {table: sequence is not None for table, sequence in sequences.items()}
    finally:
        await database.close()
    models = {
        table.name: bool(table.dialect_options["sqlite"]["autoincrement"])
        for table in Base.metadata.sorted_tables
    }
    assert found == models
    assert all(found.values())


async def test_an_embedded_database_made_with_doubled_names_gets_the_models_names(
    sqlite_url: str,
) -> None:
    """SQLite kept the doubled CHECK constraint names of databases made before 0006;
    0008 rebuilds every table and gives them the models' names."""
    database = Database(sqlite_url, DatabaseSettings())
    try:
        await migrate.upgrade(database, "0007")
        async with database.engine.begin() as connection:
            await connection.exec_driver_sql("PRAGMA writable_schema = ON")
            for table, names in _model_check_names().items():
                for name in names:
                    await connection.execute(
                        text("UPDATE sqlite_master SET sql = replace(sql, :name, :doubled) "
                             "WHERE type = 'table' AND name = :table"),
                        {"name": f"CONSTRAINT {name} ", "doubled": f"CONSTRAINT ck_{table}_{name} ",
                         "table": table},
                    )  # fmt: skip
            await connection.exec_driver_sql("PRAGMA writable_schema = OFF")
        await database.close()
        database = Database(sqlite_url, DatabaseSettings())
        async with database.engine.connect() as connection:
            doubled = await connection.run_sync(_check_names)
        await migrate.upgrade(database)
        async with database.engine.connect() as connection:
            fixed = await connection.run_sync(_check_names)
    finally:
        await database.close()
    assert doubled["job_runs"] == {
        "ck_job_runs_ck_job_runs_status",
        "ck_job_runs_ck_job_runs_source",
    }
    assert fixed == _model_check_names()
