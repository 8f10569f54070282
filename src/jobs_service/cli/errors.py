"""How the CLI reports failure: one line, a distinct exit code."""

from __future__ import annotations

import traceback

__all__ = [
    "EXIT_FAILED",
    "EXIT_PIPE_CLOSED",
    "EXIT_USAGE",
    "CliError",
    "describe_failure",
    "describe_migration_failure",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
#: What a shell reports for a command its reader stopped reading (128 + SIGPIPE).
EXIT_PIPE_CLOSED = 141

#: SQLSTATEs of a database that answers but lacks our schema, or part of it.
_UNDEFINED_TABLE, _UNDEFINED_COLUMN = "42P01", "42703"


class CliError(Exception):
    """Print ``jobsctl: <message>`` and exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def describe_failure(exc: BaseException) -> str | None:
    """One line for an error an operator causes or meets (no schema, a database or
    broker out of reach, a refusal of the service's own), or None for a bug, whose
    traceback is then the useful report. Never the driver's full text: SQLAlchemy's
    appends the statement and its parameters."""
    from jobs_service.core.errors import JobsError, SchemaError  # noqa: PLC0415

    schema = _schema_error(exc)
    if schema is not None:
        return str(SchemaError.missing() if schema == _UNDEFINED_TABLE else SchemaError.behind())
    if isinstance(exc, JobsError):
        return str(exc)
    if _is_database_error(exc):
        return _unreachable_database(exc)
    if _is_broker_error(exc):
        return f"cannot reach the broker ({type(exc).__name__}: {exc})"
    return None


def describe_migration_failure(exc: BaseException) -> str | None:
    """One line for a failed ``jobsctl migrate``, or None for a bug.

    A database that refuses the connection (no such database, role or password, nobody
    listening) is said as every command says it; a statement of a migration that the
    database refuses, or Alembic's own refusal (an unknown revision), is "migration
    failed" with the driver's or Alembic's first line. The schema hints of
    :func:`describe_failure` would be wrong here: migrating is what they ask for.
    """
    from jobs_service.infrastructure.database import describe_database_error  # noqa: PLC0415

    connecting = getattr(exc, "statement", None) is None  # SQLAlchemy names a failed one
    if _is_database_error(exc) and connecting:
        return _unreachable_database(exc)
    if _is_database_error(exc) or type(exc).__module__.startswith(("alembic", "sqlalchemy")):
        return f"migration failed: {describe_database_error(exc)}"
    return None


def _unreachable_database(exc: BaseException) -> str:
    from jobs_service.infrastructure.database import describe_database_error  # noqa: PLC0415

    return f"the database refused or could not be reached ({describe_database_error(exc)})"


def _schema_error(exc: BaseException) -> str | None:
    """``42P01`` (no such table) or ``42703`` (no such column), on either database."""
    if not type(exc).__module__.startswith("sqlalchemy"):
        return None
    from jobs_service.infrastructure.database import database_error_chain  # noqa: PLC0415

    for cause in database_error_chain(exc):
        state = getattr(cause, "sqlstate", None)
        if state in (_UNDEFINED_TABLE, _UNDEFINED_COLUMN):
            return str(state)
        text = str(cause).lower()
        if "no such table" in text:
            return _UNDEFINED_TABLE
        if "no such column" in text or "has no column named" in text:
            return _UNDEFINED_COLUMN
    return None


def _is_database_error(exc: BaseException) -> bool:
    """What the driver said (SQLAlchemy's ``DBAPIError`` wraps it), not SQLAlchemy's own
    errors about how it was used: those are bugs, and their traceback is the report."""
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    if isinstance(exc, DBAPIError) or _is_driver_error(exc):
        return True
    # A refused or unresolvable connection surfaces as a bare OSError from the driver.
    return isinstance(exc, OSError) and _raised_in(exc, ("asyncpg", "aiosqlite"))


def _is_driver_error(exc: BaseException) -> bool:
    import sqlite3  # noqa: PLC0415

    import asyncpg  # noqa: PLC0415

    return isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | sqlite3.Error)


def _is_broker_error(exc: BaseException) -> bool:
    from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: PLC0415
    from redis.exceptions import TimeoutError as RedisTimeoutError  # noqa: PLC0415

    return isinstance(exc, RedisConnectionError | RedisTimeoutError) or (
        isinstance(exc, OSError) and _raised_in(exc, ("redis",))
    )


def _raised_in(exc: BaseException, packages: tuple[str, ...]) -> bool:
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        module = str(frame.f_globals.get("__name__", ""))
        if module.split(".", maxsplit=1)[0] in packages:
            return True
    return False
