"""Which errors the CLI turns into one line, and which it leaves as tracebacks: an
operator's situation gets a sentence, a bug keeps the report that finds it."""

from __future__ import annotations

import sqlite3

import pytest
from alembic.util import CommandError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import InvalidRequestError, OperationalError
from sqlalchemy.orm.exc import DetachedInstanceError

from jobs_service.cli.errors import describe_failure, describe_migration_failure
from jobs_service.core.errors import ConfigurationError


@pytest.mark.parametrize(
    "bug",
    [
        InvalidRequestError("a transaction is already begun"),
        DetachedInstanceError("instance is not bound to a session"),
        FileNotFoundError(2, "No such file or directory", "jobs.toml"),
        KeyError("task"),
    ],
)
def test_bugs_keep_their_traceback(bug: Exception) -> None:
    assert describe_failure(bug) is None


def test_what_the_database_said_is_one_line_without_the_statement() -> None:
    wrapped = OperationalError(
        "SELECT secret FROM job_runs", {}, sqlite3.OperationalError("disk I/O error")
    )
    line = describe_failure(wrapped)
    assert line == "the database refused or could not be reached (OperationalError: disk I/O error)"


def test_an_unreachable_broker_and_the_services_own_refusals_are_one_line() -> None:
    assert describe_failure(RedisConnectionError("Error 111 connecting")) == (
        "cannot reach the broker (ConnectionError: Error 111 connecting)"
    )
    assert describe_failure(ConfigurationError("graph.sender is not set")) == (
        "graph.sender is not set"
    )


def test_a_failed_migration_is_one_line_and_says_where_it_failed() -> None:
    """A refused connection (no statement) is said as every command says it; a refused
    statement or Alembic's own refusal is "migration failed" with the first line only."""
    connect = OperationalError(None, None, sqlite3.OperationalError("unable to open database"))
    assert describe_migration_failure(connect) == (
        "the database refused or could not be reached (OperationalError: unable to open database)"
    )
    statement = OperationalError(
        "CREATE TABLE job_runs (id INTEGER)", {}, sqlite3.OperationalError("table job_runs exists")
    )
    assert describe_migration_failure(statement) == (
        "migration failed: OperationalError: table job_runs exists"
    )
    unknown = CommandError("Can't locate revision identified by 'zzz'\nsecond line")
    assert describe_migration_failure(unknown) == (
        "migration failed: CommandError: Can't locate revision identified by 'zzz'"
    )
    assert describe_migration_failure(KeyError("revision")) is None
