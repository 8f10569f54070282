"""Administration: ``migrate``, ``check``, ``tasks``."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from jobs_service.cli.context import run_async, shared_broker
from jobs_service.cli.errors import EXIT_FAILED, CliError, describe_migration_failure
from jobs_service.cli.output import print_table
from jobs_service.core.redaction import redact_url

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping

    from jobs_service.core.settings import Settings
    from jobs_service.tasks.registry import TaskInfo

__all__ = ["check", "migrate", "tasks"]


def migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Upgrade or downgrade the schema."""
    from jobs_service.infrastructure import migrate as migrations  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415

    async def apply() -> str | None:
        database = Database(settings.database_url, settings.database)
        try:
            if args.downgrade:
                await migrations.downgrade(database, args.downgrade)
            else:
                await migrations.upgrade(database, args.revision)
            return await migrations.current_revision(database)
        finally:
            await database.close()

    try:
        revision = run_async(apply())
    except Exception as exc:
        message = describe_migration_failure(exc)
        if message is None:
            raise
        raise CliError(message, EXIT_FAILED) from None
    target = redact_url(settings.database_url)
    print(f"database {target} is at revision {revision or 'base (empty)'}")
    return 0


def check(args: argparse.Namespace, settings: Settings) -> int:
    """Settings loaded and task modules imported: what is configured, then what is wrong.

    The summary goes to stdout and findings to stderr, so a script can keep either.
    """
    del args
    from jobs_service.cli.config_check import (  # noqa: PLC0415
        Finding,
        check_settings,
        describe_settings,
        environment_findings,
        label_schedule_findings,
    )
    from jobs_service.tasks.registry import list_tasks  # noqa: PLC0415

    try:
        infos = {info.name: info for info in list_tasks(shared_broker())}
    except CliError as exc:  # a task module fails: one problem among the others
        infos, module_problems = None, [Finding("problem", "task_modules", str(exc))]
    else:
        module_problems = []
    names = list(infos) if infos is not None else None
    for line in describe_settings(settings, names or []):
        print(line)
    findings = sorted(
        [
            *module_problems,
            *check_settings(settings, names, takes_event=_event_taker(infos or {})),
            *label_schedule_findings(list((infos or {}).values())),
            *environment_findings(os.environ),
        ],
        key=lambda finding: finding.level != "problem",
    )
    for finding in findings:
        sys.stderr.write(f"{finding}\n")
    return EXIT_FAILED if any(finding.level == "problem" for finding in findings) else 0


def _event_taker(infos: Mapping[str, TaskInfo]) -> Callable[[str], str | None]:
    """Why a task cannot be called as a webhook route's (``event_id`` alone), or None."""
    from jobs_service.tasks.registry import InvalidKwargsError  # noqa: PLC0415

    def reason(task: str) -> str | None:
        try:
            infos[task].validate_kwargs({"event_id": 1})
        except InvalidKwargsError as exc:
            return str(exc)
        return None

    return reason


def tasks(args: argparse.Namespace, settings: Settings) -> int:
    """List the registry."""
    del settings
    from jobs_service.tasks.registry import list_tasks  # noqa: PLC0415

    infos = list_tasks(shared_broker())
    if args.json:
        from jobs_service.gateway.schemas import TaskOut  # noqa: PLC0415

        print(json.dumps([TaskOut.of(info).model_dump(mode="json") for info in infos], indent=2))
        return 0
    print_table(
        ["TASK", "CATEGORY", "SCHEDULE", "TIMEOUT", "RETRIES", "DESCRIPTION"],
        [
            [
                info.name,
                info.category,
                ", ".join(info.schedules) or "-",
                f"{info.timeout_s:g}s" if info.timeout_s else "-",
                str(info.max_retries),
                info.summary_line,
            ]
            for info in infos
        ],
    )
    return 0
