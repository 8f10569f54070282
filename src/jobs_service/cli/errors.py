"""How the CLI reports failure: one line, a distinct exit code."""

from __future__ import annotations

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "CliError"]

EXIT_FAILED = 1
EXIT_USAGE = 2


class CliError(Exception):
    """Print ``jobsctl: <message>`` and exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code
