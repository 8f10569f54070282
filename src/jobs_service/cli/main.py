"""Entry point: parse, load settings, dispatch, turn errors into one line."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from jobs_service.cli.errors import (
    EXIT_FAILED,
    EXIT_PIPE_CLOSED,
    EXIT_USAGE,
    CliError,
    describe_failure,
)
from jobs_service.cli.parser import build_parser

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from pydantic import ValidationError

    from jobs_service.core.settings import Settings

__all__ = ["main"]


def _load_settings(args: argparse.Namespace) -> Settings:
    """Settings, or one line saying why not; ``check`` gets every validation error instead.

    A broken file is the configuration's fault, not the command line's: ``check`` fails
    with exit code 1 for it, as for any problem it finds.
    """
    import tomllib  # noqa: PLC0415 - keep --help fast

    from pydantic import ValidationError  # noqa: PLC0415
    from pydantic_settings import SettingsError  # noqa: PLC0415

    from jobs_service.core.errors import ConfigurationError  # noqa: PLC0415
    from jobs_service.core.settings import Settings  # noqa: PLC0415

    if args.config:
        # The edge of the process: modules that build from the environment (the shared
        # broker, the worker's app factory, child processes) must see the same file.
        os.environ["JOBS_CONFIG_FILE"] = args.config
    checking = args.command == "check"
    try:
        return Settings.load()
    except ValidationError as exc:
        if checking:
            raise _invalid_configuration(exc, _unvalidated()) from None
        raise _invalid_settings(exc) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        from jobs_service.cli.config_check import toml_error_message  # noqa: PLC0415

        path = os.environ.get("JOBS_CONFIG_FILE", "config file")
        code = EXIT_FAILED if checking else EXIT_USAGE
        raise CliError(f"configuration error: {toml_error_message(exc, path)}", code) from None
    except (ConfigurationError, SettingsError) as exc:
        raise CliError(f"configuration error: {exc}") from None


def _invalid_settings(error: ValidationError) -> CliError:
    from jobs_service.cli.config_check import validation_findings  # noqa: PLC0415

    findings = validation_findings(error)
    first = findings[0]
    more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
    return CliError(f"configuration error: {first.path}: {first.message}{more}")


def _invalid_configuration(error: ValidationError, given: dict[str, Any] | None) -> CliError:
    """``check``: every validation error and what the rules find in the rest, exit 1."""
    from jobs_service.cli.config_check import environment_findings  # noqa: PLC0415
    from jobs_service.cli.partial_config import invalid_settings_findings  # noqa: PLC0415

    findings = [*invalid_settings_findings(error, given), *environment_findings(os.environ)]
    problems = sum(finding.level == "problem" for finding in findings)
    lines = "".join(f"\n{finding}" for finding in findings)
    count = f"{problems} problem{'' if problems == 1 else 's'}"
    return CliError(f"configuration is invalid ({count}){lines}", EXIT_FAILED)


def _unvalidated() -> dict[str, Any] | None:
    """What the settings were loaded from, or None if even that cannot be read again."""
    from pydantic_settings import SettingsError  # noqa: PLC0415

    from jobs_service.core.errors import ConfigurationError  # noqa: PLC0415
    from jobs_service.core.settings import Settings  # noqa: PLC0415

    try:
        return Settings.unvalidated()
    except (ConfigurationError, SettingsError):
        return None


def _handler(command: str) -> Callable[[argparse.Namespace, Settings], int]:
    from jobs_service.cli import admin, audit, jobs, schedules, serve, webhooks  # noqa: PLC0415

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
        "audit": audit.audit,
    }
    return handlers[command]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``jobsctl``; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "scheduler":  # before settings and task modules load (seconds)
        import signal  # noqa: PLC0415

        from jobs_service.cli.serve import exit_on_sigterm  # noqa: PLC0415

        signal.signal(signal.SIGTERM, exit_on_sigterm)
    settings: Settings | None = None
    try:
        settings = _load_settings(args)
        from jobs_service.core.logging import configure_logging  # noqa: PLC0415

        configure_logging(settings.log_format, settings.log_level)
        if args.command != "check":  # check lists them among its findings
            _warn_unknown_environment()
        code = _handler(args.command)(args, settings)
        sys.stdout.flush()  # a reader gone shows here, not in Python's flush at exit
    except CliError as exc:
        sys.stderr.write(f"jobsctl {args.command}: {exc}\n")
        code = exc.code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # The reader went away (``jobsctl runs | head``): nothing more to say to it, and
        # Python's own flush at exit must not fail on the closed pipe either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_PIPE_CLOSED
    except Exception as exc:
        message = describe_failure(exc)
        if message is None:
            raise
        sys.stderr.write(f"jobsctl {args.command}: {message}\n")
        code = EXIT_FAILED
    if settings is not None:
        from jobs_service.cli.audit_trail import record_command  # noqa: PLC0415

        record_command(args, settings, code)
    return code


def _warn_unknown_environment() -> None:
    """One warning line for ``JOBS_*`` variables that name no setting (ignored)."""
    from jobs_service.core.settings import unknown_environment  # noqa: PLC0415

    unknown = unknown_environment()
    if unknown:
        from jobs_service.core.logging import get_logger  # noqa: PLC0415

        get_logger("jobs_service.settings").warning(
            "settings-unknown-environment",
            ignored=[name for name, _ in unknown],
            did_you_mean={name: closest for name, closest in unknown if closest},
        )


def _exit() -> None:  # pragma: no cover - console script shim
    raise SystemExit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
