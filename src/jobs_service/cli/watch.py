"""``jobsctl runs watch RUN_ID``: follow a run's status and progress until it ends.

It reads the run history directly, like the other ``runs`` commands (no gateway needed),
with the gateway's event stream's notion of a change (:class:`RunState`): a line for the
current status and progress, then one per change, then the final status. The exit code
says how the run ended (0 succeeded, 1 otherwise), so scripts can wait on a run.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from jobs_service.cli.context import run_async
from jobs_service.cli.errors import EXIT_FAILED, CliError

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.core.settings import Settings
    from jobs_service.gateway.run_feeds import RunState

__all__ = ["watch_run"]


def watch_run(run_id: str, settings: Settings, *, as_json: bool) -> int:
    """Print the run's changes until it ends; 0 if it succeeded."""
    show = _json_line if as_json else _text_line
    final = run_async(_follow(run_id, settings, show))
    if final is None:
        raise CliError(f"no run {run_id!r}", EXIT_FAILED)
    return 0 if final.status == "succeeded" else EXIT_FAILED


async def _follow(
    run_id: str, settings: Settings, show: Callable[[str, dict[str, Any]], None]
) -> RunState | None:
    from jobs_service.gateway.run_events import ChangeTracker  # noqa: PLC0415
    from jobs_service.gateway.run_feeds import RunState  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415
    from jobs_service.infrastructure.repositories.run_progress import (  # noqa: PLC0415
        read_live_states,
    )

    database = Database(settings.database_url, settings.database)
    tracker = ChangeTracker()
    last: RunState | None = None
    try:
        while True:
            async with database.sessions() as session:
                row = (await read_live_states(session, [run_id])).get(run_id)
            if row is None:  # unknown, or deleted while watched
                return last
            last = RunState.of(row)
            for event, data in tracker.changes(last):
                show(event, data)
            if last.terminal:
                return last
            await asyncio.sleep(settings.api.events_poll_interval_ms / 1000)
    finally:
        await database.close()


def _json_line(event: str, data: dict[str, Any]) -> None:
    """As ``GET /v1/runs/{run_id}/events`` writes its data (orjson: RFC 3339 times)."""
    line = orjson.dumps({"event": event, **data}, default=str).decode()
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _text_line(event: str, data: dict[str, Any]) -> None:
    now = _when(event, data).strftime("%H:%M:%S")
    if event == "progress":
        text = f"{data.get('percent', 0):>6.2f} %  {data.get('message', '')}".rstrip()
    else:
        text = f"{data['status']} (attempt {data['attempt']})"
        if data.get("summary"):
            text += f"  {json.dumps(data['summary'])}"
        if data.get("error"):
            text += f"  {data['error'].get('type')}: {data['error'].get('message')}"
    sys.stdout.write(f"{now}  {text}\n")
    sys.stdout.flush()


def _when(event: str, data: dict[str, Any]) -> datetime:
    """When the change happened (UTC), not when it is printed: watching a run that
    ended an hour ago shows the hour it ended. The progress report's time, a running
    run's start, an ended or retrying attempt's end; now for a queued run (the history
    keeps no time for a status change before the start)."""
    if event == "progress":
        at = data.get("at")
    elif data.get("status") == "running":
        at = data.get("started_at")
    else:
        at = data.get("finished_at")
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            at = None
    if not isinstance(at, datetime):
        return datetime.now(UTC)
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
