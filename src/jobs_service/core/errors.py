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
    "TaskModuleError",
]


class JobsError(Exception):
    """Base of every error the service raises on purpose."""


class ConfigurationError(JobsError):
    """The configuration cannot work; the message names the setting to fix."""


class TaskModuleError(ConfigurationError):
    """A module listed in ``task_modules`` (or a built-in one) failed to import."""


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
