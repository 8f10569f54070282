"""The argument parser of ``jobsctl``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from jobs_service import __version__

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error instead of usage plus error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


_LARGEST = 2**63 - 1


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    if number > _LARGEST:  # ids are 64-bit; the databases refuse anything larger
        raise argparse.ArgumentTypeError(f"{value} is too large (at most {_LARGEST})")
    return number


def _port(value: str) -> int:
    number = _positive(value)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535)")
    return number


def build_parser() -> argparse.ArgumentParser:
    """All commands and their options."""
    parser = _Parser(
        prog="jobsctl",
        description="Jobs Service: run, operate and inspect background jobs.",
    )
    parser.add_argument("--version", action="version", version=f"jobsctl {__version__}")
    parser.add_argument(
        "--config", metavar="FILE", help="TOML settings file (default: $JOBS_CONFIG_FILE)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    run = commands.add_parser(
        "run",
        help="all-in-one: gateway, worker and scheduler in one process",
        description="Embedded default: SQLite and the in-memory broker, one process. "
        "Migrates the database, serves the API and runs tasks and schedules.",
    )
    _serve_options(run)

    api = commands.add_parser(
        "api",
        help="serve the HTTP gateway (production)",
        description="Serve the gateway with uvicorn.",
    )
    _serve_options(api)

    worker = commands.add_parser(
        "worker",
        help="run tasks from Redis (production; needs JOBS_REDIS_URL)",
        description="Start TaskIQ worker processes on the Redis stream.",
    )
    worker.add_argument(
        "--processes",
        type=_positive,
        metavar="N",
        help="worker processes (default: worker.processes setting)",
    )
    worker.add_argument(
        "--concurrency",
        type=_positive,
        metavar="N",
        help="tasks each process runs at once (default: worker.concurrency)",
    )

    commands.add_parser(
        "scheduler",
        help="fire schedules (production)",
        description="Fire database schedules (label and API) on TaskIQ's scheduler loop; "
        "run one per machine or more: replicas never double-fire.",
    )

    migrate = commands.add_parser(
        "migrate",
        help="upgrade (or downgrade) the database schema",
        description="Apply Alembic migrations.",
    )
    target = migrate.add_mutually_exclusive_group()
    target.add_argument("--revision", default="head", help="upgrade to REVISION (default head)")
    target.add_argument(
        "--downgrade", metavar="REVISION", help="downgrade to REVISION ('base' removes every table)"
    )

    commands.add_parser(
        "check",
        help="validate the configuration and task modules",
        description="Load settings and import every task module; "
        "report problems and exit non-zero if any.",
    )

    tasks = commands.add_parser(
        "tasks", help="list registered tasks", description="List every registered task."
    )
    tasks.add_argument("--json", action="store_true", help="print JSON")

    enqueue = commands.add_parser(
        "enqueue", help="queue a run of a task", description="Validate kwargs and queue one run."
    )
    enqueue.add_argument("name", help="task name, e.g. check_system_health")
    enqueue.add_argument(
        "--kwargs",
        default="{}",
        metavar="JSON",
        help="keyword arguments as a JSON object, e.g. '{\"days\": 7}'",
    )
    enqueue.add_argument(
        "--wait", action="store_true", help="wait for the run to finish and print its summary"
    )
    enqueue.add_argument(
        "--timeout",
        type=_positive,
        default=300,
        metavar="SECONDS",
        help="with --wait: give up after this long (default 300)",
    )
    enqueue.add_argument(
        "--idempotency-key", metavar="KEY", help="queue at most one run for this key"
    )

    _add_schedules(commands)
    _add_webhooks(commands)
    _add_audit(commands)

    runs = commands.add_parser(
        "runs",
        help="list recent runs; show, retry, cancel or watch one",
        description="Read the run history: 'runs' lists, 'runs RUN_ID' or 'runs show RUN_ID' "
        "shows one with its attempts. 'runs retry RUN_ID' queues a failed, dead or cancelled "
        "run again (its next attempt); 'runs cancel RUN_ID' cancels a queued, retrying or "
        "running one; 'runs watch RUN_ID' prints its status and progress as they change "
        "until it ends (exit code 0 if it succeeded).",
    )
    runs.add_argument(
        "target",
        nargs="*",
        metavar="[show|retry|cancel|watch] RUN_ID",
        help="a run id, optionally after the action (default: show)",
    )
    runs.add_argument("--task", help="only runs of this task")
    runs.add_argument(
        "--status",
        choices=["queued", "running", "succeeded", "failed", "retrying", "dead", "cancelled"],
    )
    runs.add_argument("--source", choices=["api", "schedule", "webhook", "retry", "cli"])
    runs.add_argument("--limit", type=_positive, default=20, help="how many (default 20)")
    runs.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default: api.host setting, 127.0.0.1)")
    parser.add_argument("--port", type=_port, help="port (default: api.port setting, 8000)")


def _add_schedules(commands: Any) -> None:
    """``jobsctl schedules list|show|pause|resume|trigger``."""
    schedules = commands.add_parser(
        "schedules",
        help="list, inspect, pause, resume or trigger schedules",
        description="Work with schedules (label and API).",
    )
    actions = schedules.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    listing = actions.add_parser("list", help="list schedules", description="List schedules.")
    listing.add_argument("--task", help="only schedules of this task")
    listing.add_argument("--json", action="store_true", help="print JSON")
    for action, text in (
        ("show", "one schedule with its next fires and recent runs"),
        ("pause", "stop firing until resumed"),
        ("resume", "fire again from now on (missed fires are not replayed)"),
        ("trigger", "queue a run of the schedule's task now"),
    ):
        sub = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("schedule_id", type=_positive, metavar="ID", help="schedule id")
        if action == "pause":
            sub.add_argument("--note", help="why it is paused (shown in the API)")


def _add_webhooks(commands: Any) -> None:
    """``jobsctl webhooks list|show|replay``."""
    webhooks = commands.add_parser(
        "webhooks",
        help="list, inspect or replay received webhook events",
        description="The webhook inbox.",
    )
    inbox = webhooks.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    inbox.required = True
    events = inbox.add_parser("list", help="newest events first", description="List events.")
    events.add_argument("--source", help="only events of this source")
    events.add_argument("--status", choices=["accepted", "enqueued", "processed", "failed"])
    events.add_argument("--limit", type=_positive, default=20, help="how many (default 20)")
    events.add_argument("--json", action="store_true", help="print JSON")
    for action, text in (
        ("show", "one event with its headers and body"),
        ("replay", "process the event again (a new run)"),
    ):
        sub = inbox.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("event_id", type=_positive, metavar="ID", help="event id")


def _since(value: str) -> datetime:
    """``--since``: ISO 8601 (UTC unless it has an offset) or an age such as 30m, 12h, 7d."""
    units = {"m": 60, "h": 3600, "d": 86_400}
    try:
        if value[-1:] in units and value[:-1].isdigit():
            return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
        moment = datetime.fromisoformat(value)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither an ISO 8601 time nor an age like 30m, 12h or 7d"
        ) from None
    except OverflowError:  # 1000000d, or a time at year 1 with an offset
        raise argparse.ArgumentTypeError(f"{value!r} reaches beyond the calendar") from None


def _add_audit(commands: Any) -> None:
    """``jobsctl audit``: the audit log, newest first."""
    audit = commands.add_parser(
        "audit",
        help="list operator actions (the audit log)",
        description="Who did what, when, on what: every mutating API request, newest first.",
    )
    audit.add_argument("--actor", help="only actions of this API key name")
    audit.add_argument("--action", help="only this action, e.g. 'POST /v1/runs/{run_id}/retry'")
    audit.add_argument("--target", help="only actions on this target (e.g. a schedule id)")
    audit.add_argument(
        "--since", type=_since, metavar="TIME", help="ISO 8601 (UTC by default) or 30m, 12h, 7d"
    )
    audit.add_argument("--limit", type=_positive, default=20, help="how many (default 20)")
    audit.add_argument("--json", action="store_true", help="print JSON")
