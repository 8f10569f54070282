"""The exception vocabulary shared by every layer.

Each error carries a message written for an operator: the CLI prints it as one line and
the gateway turns it into a problem+json ``detail``.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "JobsError",
    "PermanentError",
    "RetryLater",
    "SchemaError",
    "TaskModuleError",
]


class JobsError(Exception):
    """Base of every error the service raises on purpose."""


class ConfigurationError(JobsError):
    """The configuration cannot work; the message names the setting to fix."""


class TaskModuleError(ConfigurationError):
    """A module listed in ``task_modules`` (or a built-in one) failed to import."""


class SchemaError(JobsError):
    """The database answers but lacks the schema this release needs: it was never
    migrated, or not to this release's revision. ``jobsctl migrate`` fixes both."""

    @classmethod
    def missing(cls) -> SchemaError:
        """No Jobs Service tables (no Alembic revision) in the database."""
        return cls(
            "the database has no Jobs Service tables yet: run `jobsctl migrate` first "
            "(`jobsctl run` migrates by itself)"
        )

    @classmethod
    def behind(cls, revision: str | None = None, head: str | None = None) -> SchemaError:
        """The database is at an older revision: ``revision`` and this release's ``head``
        when known (a failed query on a missing column knows neither)."""
        if revision is None or head is None:
            return cls(
                "the database is at an older revision than this release: run `jobsctl migrate`"
            )
        return cls(
            f"the database is at an older revision ({revision}) than this release "
            f"({head}): run `jobsctl migrate`"
        )


class RetryLater(JobsError):  # noqa: N818 - reads as an instruction at the raise site
    """A transient failure: retry the run, no sooner than ``retry_after`` seconds.

    Agents raise it for timeouts, connection errors, 5xx and 429, with ``retry_after``
    taken from the provider's ``Retry-After`` when it sent one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(JobsError):
    """A failure that retrying cannot fix (bad input, 4xx from a provider)."""
