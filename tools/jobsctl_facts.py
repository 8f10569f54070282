"""What the project's processes are and serve, for the container checks.

``jobsctl`` commands are parsed by the CLI's own argparse parser, and the API's health
paths come from the gateway's routes, so the checks follow the code rather than a copy.
"""

from __future__ import annotations

import contextlib
import io
import re
from typing import TYPE_CHECKING

from jobs_service.cli.parser import build_parser

if TYPE_CHECKING:
    import argparse

__all__ = ["LONG_RUNNING", "URL", "api_health_paths", "parse_jobsctl"]

# Commands that serve until stopped; anything else belongs in a one-shot service.
LONG_RUNNING = frozenset({"run", "api", "worker", "scheduler"})
URL = re.compile(r"https?://[^\s'\"]+")


def parse_jobsctl(argv: list[str]) -> tuple[argparse.Namespace | None, str]:
    """``jobsctl argv`` parsed by the CLI's own parser: (arguments, "") or (None, error)."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv), ""
    except SystemExit:
        message = errors.getvalue().strip().splitlines()
        return None, message[0] if message else "prints help and exits"


def api_health_paths() -> frozenset[str]:
    """Paths of the gateway's unauthenticated probes (``/health``, ``/ready``)."""
    from jobs_service.gateway.routes import health  # noqa: PLC0415 - FastAPI only when needed

    return frozenset(getattr(route, "path", "") for route in health.router.routes) - {"/metrics"}
