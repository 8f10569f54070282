"""``jobsctl``: the operator's command line.

Every command loads the settings once (``--config`` or ``JOBS_CONFIG_FILE``, then the
environment) and imports the heavy parts (FastAPI, TaskIQ, SQLAlchemy) only when it
needs them, so ``jobsctl --help`` and argument errors are instant. A usage or
configuration error is one line on stderr and exit code 2; a failed operation exits 1.
"""

from __future__ import annotations

from jobs_service.cli.main import main

__all__ = ["main"]
