"""Reading what a test logged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs_service.core.logging import flush_logs

if TYPE_CHECKING:
    import pytest

__all__ = ["logged_lines"]


def logged_lines(capfd: pytest.CaptureFixture[str]) -> list[str]:
    """The lines logged so far, wherever this process's logging configuration sends them:
    a module logger first used before any test configured logging keeps structlog's
    default (the console format, on stdout), so assertions look for the event's name and
    its text, not for JSON."""
    flush_logs()
    captured = capfd.readouterr()
    return (captured.out + captured.err).splitlines()
