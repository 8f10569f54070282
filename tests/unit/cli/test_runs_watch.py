"""`jobsctl runs watch RUN_ID`: a run's status and progress until it ends."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import update

from jobs_service.cli.watch import _follow, watch_run
from jobs_service.core.ids import new_run_id
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import JobRun
from jobs_service.infrastructure.repositories import runs
from tests.support.processes import jobsctl

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from jobs_service.core.settings import Settings

ENV = {"JOBS_TASK_MODULES": "tests.support.sample_tasks"}


def test_watching_a_finished_run_prints_its_end_and_exits_with_its_outcome(
    tmp_path: Path,
) -> None:
    """A succeeded run: its final progress then status, exit 0; a failed run: exit 1;
    an unknown run: a one-line error, exit 1."""
    done = jobsctl("enqueue", "report_steps", "--kwargs", '{"steps": 4}', env=ENV, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    watched = jobsctl("runs", "watch", run_id, "--json", env=ENV, cwd=tmp_path)
    failed = jobsctl("enqueue", "fail_on_purpose", env=ENV, cwd=tmp_path)
    failed_id = json.loads(failed.stdout)["run_id"]
    watched_failure = jobsctl("runs", "watch", failed_id, env=ENV, cwd=tmp_path)
    unknown = jobsctl("runs", "watch", "f" * 32, env=ENV, cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    assert [line["event"] for line in lines] == ["progress", "status"]
    assert (lines[0]["percent"], lines[0]["message"]) == (100, "step 4 of 4")
    assert (lines[1]["status"], lines[1]["summary"]) == ("succeeded", {"processed": 4, "errors": 0})
    # Times as the API writes them (RFC 3339, with the T), which a parser takes back.
    finished = lines[1]["finished_at"]
    assert "T" in finished
    assert datetime.fromisoformat(finished).tzinfo is not None
    assert watched_failure.returncode == 1
    assert "failed (attempt 1)" in watched_failure.stdout
    assert "RuntimeError: boom" in watched_failure.stdout
    assert unknown.returncode == 1
    assert "no run" in unknown.stderr


@pytest.mark.anyio
async def test_watching_a_live_run_prints_each_change_once(
    make_settings: Callable[..., Settings],
) -> None:
    """queued → running with progress → more progress → succeeded: one line per change,
    none repeated, and the watch returns the final state."""
    settings = make_settings(api={"events_poll_interval_ms": 50})
    database = Database(settings.database_url, settings.database)
    await migrate.upgrade(database)
    run_id = new_run_id()
    async with database.engine.begin() as connection:
        queued = runs.QueuedRun(run_id, "report_steps", {}, "api", datetime.now(UTC))
        await runs.insert_queued_runs(connection, [queued])

    async def change(**values: Any) -> None:
        await asyncio.sleep(0.2)
        async with database.engine.begin() as connection:
            await connection.execute(update(JobRun).where(JobRun.run_id == run_id).values(**values))

    async def worker() -> None:
        await change(status="running", attempt=1, progress={"percent": 10, "message": "a"})
        await change(progress={"percent": 60, "message": "b"})
        await change(status="succeeded", progress={"percent": 100, "message": "c"})

    shown: list[tuple[str, Any]] = []

    def show(event: str, data: dict[str, Any]) -> None:
        shown.append((event, data.get("status", data.get("percent"))))

    try:
        final, _ = await asyncio.gather(_follow(run_id, settings, show), worker())
    finally:
        await database.close()
    assert final is not None
    assert final.status == "succeeded"
    assert shown == [
        ("status", "queued"),
        ("status", "running"),
        ("progress", 10),
        ("progress", 60),
        ("progress", 100),
        ("status", "succeeded"),
    ]


def test_retrying_an_unknown_run_says_only_that_it_is_unknown(tmp_path: Path) -> None:
    """Embedded mode: the note that the attempt runs here comes once a retry is
    accepted, not before the run is even found."""
    assert jobsctl("migrate", env=ENV, cwd=tmp_path).returncode == 0
    unknown = jobsctl("runs", "retry", "f" * 32, env=ENV, cwd=tmp_path)
    assert unknown.returncode == 1
    assert "no run" in unknown.stderr
    assert "running the retried attempt" not in unknown.stderr


@pytest.mark.parametrize("command", [("runs",), ("runs", "retry", "f" * 32), ("schedules", "list")])
def test_a_database_without_tables_is_one_line_not_a_traceback(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A fresh directory (a new SQLite file, never migrated): every command that reads
    the history says what to do in one line, exit 1."""
    result = jobsctl(*command, env=ENV, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"jobsctl {command[0]}: the database has no Jobs Service tables yet: run "
        "`jobsctl migrate` first (`jobsctl run` migrates by itself)"
    ]


def test_each_line_carries_the_time_of_its_change_not_of_its_printing(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that ended yesterday at 03:04:05 UTC: its lines say 03:04:05 (the progress
    report's time, the attempt's end), where they said the time the watch printed them."""
    settings = make_settings()
    ended = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    run_id = new_run_id()

    async def prepare() -> None:
        database = Database(settings.database_url, settings.database)
        try:
            await migrate.upgrade(database)
            async with database.engine.begin() as connection:
                queued = runs.QueuedRun(run_id, "report_steps", {}, "api", ended)
                await runs.insert_queued_runs(connection, [queued])
                progress = {"percent": 100, "message": "done", "at": ended.isoformat()}
                await connection.execute(
                    update(JobRun)
                    .where(JobRun.run_id == run_id)
                    .values(
                        status="failed",
                        attempt=1,
                        started_at=ended,
                        finished_at=ended,
                        progress=progress,
                        error={"type": "RuntimeError", "message": "boom"},
                    )
                )
        finally:
            await database.close()

    asyncio.run(prepare())
    assert watch_run(run_id, settings, as_json=False) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ", 1)[0] for line in lines] == ["03:04:05", "03:04:05"]
    assert "failed (attempt 1)" in lines[1]
