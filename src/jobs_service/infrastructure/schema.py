"""Whether the database's schema is the one this release was written for.

Alembic records the revision a database was migrated to (``alembic_version``); this
release ships its revisions and knows their head. Compared, the database is:

- ``missing``: no revision, so no Jobs Service tables (never migrated);
- ``behind``: at one of this release's revisions before its head: the release was
  deployed without ``jobsctl migrate``, and its queries would fail on what is missing;
- ``current``: at the head;
- ``newer``: at a revision this release does not know, which a newer release's
  ``jobsctl migrate`` wrote. That is the normal state while a release rolls out
  (``jobsctl migrate`` runs first, so the previous release's processes keep running on
  the new schema until they are replaced, and may restart meanwhile) and after a
  rollback of the code; a revision never removes or changes what the release before
  it uses. So it is usable, and said in the log at start.

The processes that serve (``jobsctl api``, ``worker``, ``scheduler``) refuse to start on
a database that is missing or behind (:func:`require_schema`), and ``GET /ready`` reads
the revision at every call (:func:`~jobs_service.infrastructure.health.check_database`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from alembic.runtime.migration import MigrationContext

from jobs_service.core.errors import SchemaError
from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.database import describe_database_error, sqlite_path
from jobs_service.infrastructure.migrate import head_revision, known_revisions

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from jobs_service.infrastructure.database import Database

__all__ = ["SchemaState", "read_schema", "require_schema"]

_log = get_logger("jobs_service.schema")


@dataclass(frozen=True, slots=True)
class SchemaState:
    """The database's revision next to this release's head."""

    revision: str | None
    head: str
    known: bool

    @property
    def status(self) -> Literal["missing", "behind", "current", "newer"]:
        """How the database's revision compares with this release's head."""
        if self.revision is None:
            return "missing"
        if not self.known:
            return "newer"
        return "current" if self.revision == self.head else "behind"

    @property
    def error(self) -> SchemaError | None:
        """Why this release cannot run on the database, or None when it can."""
        if self.status == "missing":
            return SchemaError.missing()
        if self.status == "behind":
            return SchemaError.behind(self.revision, self.head)
        return None

    def describe(self) -> str:
        """The revision, for a log line or a readiness check's detail."""
        if self.status == "newer":
            return f"revision {self.revision}, newer than this release's {self.head}"
        return f"revision {self.revision or 'none'}"


async def read_schema(database: Database) -> SchemaState:
    """The database's revision (one catalogue query and one read of Alembic's table).

    A SQLite file that does not exist is an empty database, read without creating it.
    """
    head = head_revision()
    path = sqlite_path(database.url)
    if path is not None and not path.exists():
        return SchemaState(None, head, known=True)
    async with database.engine.connect() as connection:
        heads = await connection.run_sync(_current_heads)
    # This release's revisions form one line, so a database has one head at most; a
    # revision it does not know decides (it is a newer release's).
    unknown = [revision for revision in heads if revision not in known_revisions()]
    if unknown:
        return SchemaState(unknown[0], head, known=False)
    return SchemaState(heads[0] if heads else None, head, known=True)


def _current_heads(connection: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


async def require_schema(
    database: Database, process: str, *, timeout_s: float
) -> SchemaState | None:
    """Raise :class:`SchemaError` if the database answers without this release's schema
    (missing or behind); log a warning if a newer release migrated it.

    A database that does not answer within ``timeout_s`` is not a reason to refuse:
    gateways and workers keep working through a PostgreSQL outage (see the runbook), and
    one restarted during it must too. It is logged, and None returned.
    """
    try:
        state = await asyncio.wait_for(read_schema(database), timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - any failure to read leaves the start as it was
        reason = (
            f"no answer within {timeout_s:g} s"
            if isinstance(exc, TimeoutError)
            else describe_database_error(exc)
        )
        _log.warning(
            "schema-unchecked",
            process=process,
            error=reason,
            message="the database did not answer: starting without checking its revision",
        )
        return None
    error = state.error
    if error is not None:
        raise error
    if state.status == "newer":
        _log.warning(
            "schema-newer-than-release",
            process=process,
            revision=state.revision,
            head=state.head,
            message="a newer release migrated the database; this one runs on it (a "
            "rollout in progress, or a rollback of the code)",
        )
    return state
