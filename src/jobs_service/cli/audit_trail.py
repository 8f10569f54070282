"""Operator actions taken with ``jobsctl`` go to the audit log too.

The CLI changes the database directly, not through the API, so the gateway's audit
middleware never sees its actions. Each command that changes something (queueing,
retrying or cancelling a run, pausing, resuming or triggering a schedule, replaying a
webhook event) records one entry once it is done: actor ``cli:<user>``, action
``jobsctl <command> <action>``, the id it acted on, and its exit code as the outcome
(0: done). Reads are not recorded, nor ``migrate``, which changes the very schema the
log lives in. A failure to record after a command that succeeded is one line on stderr
and leaves the exit code alone: the action has happened either way.
"""

from __future__ import annotations

import getpass
import socket
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from jobs_service.core.settings import Settings
    from jobs_service.infrastructure.repositories.audit import NewAuditEntry

__all__ = ["cli_actor", "command_action", "record_command"]

_RUN_ACTIONS = frozenset({"retry", "cancel"})
_SCHEDULE_ACTIONS = frozenset({"pause", "resume", "trigger"})


def cli_actor() -> str:
    """Who acts from the command line: ``cli:<user>``, or ``cli`` without a user name."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no user name in this environment
        return "cli"


def command_action(args: argparse.Namespace) -> tuple[str, str | None] | None:
    """``(action, target)`` of a command that changes something; None for a read."""
    command, action = args.command, getattr(args, "action", None)
    if command == "enqueue":
        return "jobsctl enqueue", args.name
    if command == "runs" and len(args.target) == 2 and args.target[0] in _RUN_ACTIONS:
        return f"jobsctl runs {args.target[0]}", args.target[1]
    if command == "schedules" and action in _SCHEDULE_ACTIONS:
        return f"jobsctl schedules {action}", str(args.schedule_id)
    if command == "webhooks" and action == "replay":
        return "jobsctl webhooks replay", str(args.event_id)
    return None


def record_command(args: argparse.Namespace, settings: Settings, exit_code: int) -> None:
    """Record the command's action, if it is one, with its exit code."""
    described = command_action(args)
    if described is None:
        return
    from jobs_service.infrastructure.repositories.audit import NewAuditEntry  # noqa: PLC0415

    action, target = described
    entry = NewAuditEntry(
        at=datetime.now(UTC),
        actor=cli_actor(),
        action=action,
        target=target,
        outcome=exit_code,
        detail={"host": socket.gethostname()},
    )
    try:
        _write(settings, entry)
    except Exception as exc:  # noqa: BLE001 - the action is done; say what was not kept
        if exit_code != 0:  # the command failed and said why (often this very database)
            return
        sys.stderr.write(
            f"jobsctl {args.command}: not recorded in the audit log "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})\n"
        )


def _write(settings: Settings, entry: NewAuditEntry) -> None:
    from jobs_service.cli.context import run_async  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415
    from jobs_service.infrastructure.repositories.audit import insert_entries  # noqa: PLC0415

    async def write() -> None:
        database = Database(settings.database_url, settings.database)
        try:
            async with database.engine.begin() as connection:
                await insert_entries(connection, [entry])
        finally:
            await database.close()

    run_async(write())
