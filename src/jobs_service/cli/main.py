"""Entry point: parse, load settings, dispatch, turn errors into one line."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from jobs_service.cli.errors import CliError
from jobs_service.cli.parser import build_parser

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from jobs_service.core.settings import Settings

__all__ = ["main"]


def _load_settings(args: argparse.Namespace) -> Settings:
    from pydantic import ValidationError  # noqa: PLC0415 - keep --help fast

    from jobs_service.core.errors import ConfigurationError  # noqa: PLC0415
    from jobs_service.core.settings import Settings  # noqa: PLC0415

    if args.config:
        # The edge of the process: modules that build from the environment (the shared
        # broker, the worker's app factory, child processes) must see the same file.
        os.environ["JOBS_CONFIG_FILE"] = args.config
    try:
        return Settings.load()
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise CliError(f"configuration error: {where}: {error['msg']}{more}") from None
    except ConfigurationError as exc:
        raise CliError(f"configuration error: {exc}") from None


def _handler(command: str) -> Callable[[argparse.Namespace, Settings], int]:
    from jobs_service.cli import admin, jobs, schedules, serve, webhooks  # noqa: PLC0415

    handlers: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
        "run": serve.run,
        "api": serve.api,
        "worker": serve.worker,
        "scheduler": serve.scheduler,
        "migrate": admin.migrate,
        "check": admin.check,
        "tasks": admin.tasks,
        "enqueue": jobs.enqueue,
        "runs": jobs.runs,
        "schedules": schedules.schedules,
        "webhooks": webhooks.webhooks,
    }
    return handlers[command]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``jobsctl``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = _load_settings(args)
        from jobs_service.core.logging import configure_logging  # noqa: PLC0415

        configure_logging(settings.log_format, settings.log_level)
        return _handler(args.command)(args, settings)
    except CliError as exc:
        sys.stderr.write(f"jobsctl {args.command}: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        return 130


def _exit() -> None:  # pragma: no cover - console script shim
    raise SystemExit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
