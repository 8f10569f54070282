"""The progress writer through a database outage (SQLite file, no sockets)."""

from __future__ import annotations

import asyncio
import json

import pytest
import structlog

from jobs_service.core.logging import configure_logging, flush_logs
from jobs_service.core.progress import Progress
from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.progress import ProgressWriter
from jobs_service.infrastructure.repositories import runs
from tests.support.run_events import run_in_progress

pytestmark = pytest.mark.anyio


async def test_a_failing_database_delays_progress_and_the_latest_value_lands_later(
    sqlite_url: str,
) -> None:
    """Writes fail (the schema is missing): the value stays pending and the flusher keeps
    going; once the database works the latest report is written, not the older one."""
    database = Database(sqlite_url, DatabaseSettings())
    writer = ProgressWriter(database, interval_s=0.02)
    run = run_in_progress(task="report_steps", progress_sink=writer)
    try:
        run.record_progress(Progress(10, "first"))
        await asyncio.sleep(0.1)
        assert writer.pending == 1  # not lost while it cannot be written
        assert writer.statements == 0
        await migrate.upgrade(database)
        async with database.engine.begin() as connection:
            row = runs.QueuedRun(run.run_id, run.task, {}, "api", run.queued_at)
            await runs.insert_queued_runs(connection, [row])
        run.record_progress(Progress(20, "second"))
        for _ in range(100):
            if writer.pending == 0:
                break
            await asyncio.sleep(0.05)
        async with database.sessions() as session:
            stored = await runs.get_run(session, run_id=run.run_id)
    finally:
        await writer.aclose()
        await database.close()
    assert stored is not None
    assert stored.progress is not None
    assert (stored.progress["percent"], stored.progress["message"]) == (20, "second")


async def test_the_writer_does_not_log_as_the_run_that_started_it(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The writer starts inside the first run that reports; its failure lines used to
    carry that run's id for good, whichever run's report was pending."""
    configure_logging("json", "info")
    database = Database(sqlite_url, DatabaseSettings())  # no schema: every write fails
    writer = ProgressWriter(database, interval_s=0.02)
    run = run_in_progress("first-run", task="report_steps", progress_sink=writer)
    structlog.contextvars.bind_contextvars(run_id="first-run", task="report_steps")
    try:
        run.record_progress(Progress(10, "first"))
        await asyncio.sleep(0.1)
    finally:
        structlog.contextvars.clear_contextvars()
        await writer.aclose()
        await database.close()
    flush_logs()
    failures = [
        json.loads(line)
        for line in capsys.readouterr().err.splitlines()
        if '"progress-write-failed"' in line
    ]
    assert failures
    assert all("run_id" not in line for line in failures)
