"""How the CLI reports failure: one line, a distinct exit code."""

from __future__ import annotations

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "CliError", "is_schema_missing"]

EXIT_FAILED = 1
EXIT_USAGE = 2


class CliError(Exception):
    """Print ``jobsctl: <message>`` and exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def is_schema_missing(exc: BaseException) -> bool:
    """The database answers but has none of our tables: not migrated yet (a new SQLite
    file, an empty PostgreSQL database). Read from the error itself, so that ``jobsctl``
    need not import SQLAlchemy to tell."""
    if not type(exc).__module__.startswith("sqlalchemy"):
        return False
    cause = getattr(exc, "orig", None)
    text = str(cause if cause is not None else exc).lower()
    # Tables, not columns: a database at an older revision is another matter.
    return "no such table" in text or type(cause).__name__ == "UndefinedTableError"
