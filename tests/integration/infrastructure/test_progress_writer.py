"""Run progress in ``job_runs``: the coalescing writer and the run recorder together,
on the real PostgreSQL and on SQLite (the embedded default)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from jobs_service.core.ids import new_run_id
from jobs_service.core.progress import Progress
from jobs_service.core.run_context import RunContext
from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.progress import ProgressWriter
from jobs_service.infrastructure.repositories import runs
from jobs_service.infrastructure.repositories.run_progress import write_progress
from jobs_service.infrastructure.run_recorder import RunRecorder

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


@pytest.fixture
async def recorder(any_database: Database) -> AsyncIterator[RunRecorder]:
    recorder = RunRecorder(any_database, batch_size=100, flush_interval_s=10)
    yield recorder
    await recorder.stop()


def _context(run_id: str, attempt: int = 1) -> RunContext:
    return RunContext(
        run_id=run_id,
        task="report_steps",
        kwargs={"steps": 1},
        attempt=attempt,
        source="api",
        queued_at=datetime.now(UTC) - timedelta(seconds=1),
    )


def _event(run: RunContext, status: str, *, finished: bool) -> runs.RunEvent:
    event = runs.RunEvent(
        run.run_id,
        run.task,
        run.kwargs,
        run.source,
        status,
        run.attempt,
        "test:1",
        run.queued_at,
        run.started_at,
    )
    if finished:
        event.finished_at = datetime.now(UTC)
        event.duration_ms = 1
        event.summary = {"errors": 0}
        event.progress = run.progress
    return event


async def _progress(database: Database, run_id: str) -> dict[str, Any] | None:
    async with database.sessions() as session:
        row = await runs.get_run(session, run_id=run_id)
    assert row is not None
    return row.progress


async def _started(recorder: RunRecorder, run: RunContext) -> None:
    recorder.record(_event(run, "running", finished=False))
    await recorder.flush()


async def test_a_thousand_reports_become_a_few_writes_and_the_last_one_is_stored(
    any_database: Database, recorder: RunRecorder
) -> None:
    """1,000 reports in a tight loop, then a pause: at most a few statements (one per
    interval), and the row holds the 1,000th report."""
    run = _context(new_run_id())
    await _started(recorder, run)
    writer = ProgressWriter(any_database, interval_s=0.2)
    run.progress_sink = writer
    try:
        for step in range(1, 1001):
            run.record_progress(Progress(step / 10, f"item {step}"))
            if step % 100 == 0:
                await asyncio.sleep(0)  # let the flusher run now and then
        for _ in range(100):
            if writer.pending == 0:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        stored = await _progress(any_database, run.run_id)
        statements = writer.statements
    finally:
        await writer.aclose()
    assert stored is not None
    assert (stored["percent"], stored["message"], stored["attempt"]) == (100, "item 1000", 1)
    assert 1 <= statements <= 3


async def test_a_run_end_writes_its_last_progress_and_late_reports_cannot_change_it(
    any_database: Database, recorder: RunRecorder
) -> None:
    """The recorder writes the last report with the final status; an interim write of
    an older value that arrives afterwards is refused and the status stays as it was."""
    run = _context(new_run_id())
    await _started(recorder, run)
    run.record_progress(Progress(40, "early"))
    early = run.progress
    assert early is not None
    run.record_progress(Progress(100, "done"))
    recorder.record(_event(run, "succeeded", finished=True))
    await recorder.flush()
    async with any_database.engine.begin() as connection:
        changed = (await write_progress(connection, [(run.run_id, 1, early)])).changed
    async with any_database.sessions() as session:
        row = await runs.get_run(session, run_id=run.run_id)
    assert changed == 0
    assert row is not None
    assert row.status == "succeeded"
    assert row.progress is not None
    assert (row.progress["percent"], row.progress["message"]) == (100, "done")


async def test_progress_applies_to_a_row_behind_the_attempt_but_not_to_an_ended_attempt(
    any_database: Database, recorder: RunRecorder
) -> None:
    """A queued row (the `running` write not landed yet) takes attempt 1's progress; a
    `retrying` row of attempt 1 refuses attempt 1's late report but takes attempt 2's;
    attempt 2 ending without reporting keeps attempt 2's report."""
    run = _context(new_run_id())
    queued = runs.QueuedRun(run.run_id, run.task, run.kwargs, "api", run.queued_at)
    async with any_database.engine.begin() as connection:
        await runs.insert_queued_runs(connection, [queued])
        behind = (await write_progress(connection, [(run.run_id, 1, {"percent": 10})])).changed
    run.record_progress(Progress(50, "half"))
    recorder.record(_event(run, "retrying", finished=True))
    await recorder.flush()
    async with any_database.engine.begin() as connection:
        late = (await write_progress(connection, [(run.run_id, 1, {"percent": 60})])).changed
        next_attempt = (
            await write_progress(connection, [(run.run_id, 2, {"percent": 5, "attempt": 2})])
        ).changed
    second = _context(run.run_id, attempt=2)
    recorder.record(_event(second, "succeeded", finished=True))  # reported nothing itself
    await recorder.flush()
    assert behind == 1
    assert late == 0
    assert next_attempt == 1
    assert await _progress(any_database, run.run_id) == {"percent": 5, "attempt": 2}


async def test_a_nul_in_a_progress_message_is_written_and_the_run_still_ends(
    any_database: Database, recorder: RunRecorder
) -> None:
    """A task's status line holding a NUL (copied from a file it reads) made PostgreSQL
    refuse the progress write, and the run's final record, which carries the last
    report. PostgreSQL now stores it with U+FFFD in place of the NUL (SQLite keeps it)."""
    run = _context(new_run_id())
    await _started(recorder, run)
    run.record_progress(Progress(50, "row\x00 7"))
    assert run.progress is not None
    async with any_database.engine.begin() as connection:
        changed = (await write_progress(connection, [(run.run_id, 1, run.progress)])).changed
    written = await _progress(any_database, run.run_id)
    recorder.record(_event(run, "succeeded", finished=True))
    await recorder.flush()
    async with any_database.sessions() as session:
        row = await runs.get_run(session, run_id=run.run_id)
    message = "row\ufffd 7" if any_database.dialect == "postgresql" else "row\x00 7"
    assert changed == 1
    assert written is not None
    assert written["message"] == message
    assert row is not None
    assert row.status == "succeeded"
    assert row.progress is not None
    assert row.progress["message"] == message


async def test_a_row_another_transaction_holds_is_skipped_and_written_once_free(
    pg_url: str,
) -> None:
    """PostgreSQL: while another transaction holds one run's row, a progress write does
    not wait for it (a wait could deadlock with the run recorder): it writes the other
    run, reports the held one busy, and the writer writes it once the row is free."""
    any_database = Database(pg_url, DatabaseSettings())
    recorder = RunRecorder(any_database, batch_size=100, flush_interval_s=10)
    held_run, free_run = _context(new_run_id()), _context(new_run_id())
    writer = ProgressWriter(any_database, interval_s=0.05)
    try:
        for run in (held_run, free_run):
            await _started(recorder, run)
        async with any_database.engine.connect() as holder:
            await holder.exec_driver_sql(
                "SELECT 1 FROM job_runs WHERE run_id = $1 FOR UPDATE", (held_run.run_id,)
            )
            async with any_database.engine.begin() as connection:
                written = await asyncio.wait_for(
                    write_progress(
                        connection,
                        [
                            (held_run.run_id, 1, {"percent": 1}),
                            (free_run.run_id, 1, {"percent": 2}),
                        ],
                    ),
                    timeout=5,
                )
            held_run.progress_sink = writer
            held_run.record_progress(Progress(30, "while held"))
            await asyncio.sleep(0.2)  # several flushes find the row busy
            pending_while_held = writer.pending
            stored_while_held = await _progress(any_database, held_run.run_id)
            await holder.rollback()
        for _ in range(100):
            if writer.pending == 0:
                break
            await asyncio.sleep(0.02)
        stored = await _progress(any_database, held_run.run_id)
        stored_free = await _progress(any_database, free_run.run_id)
    finally:
        await writer.aclose()
        await recorder.stop()
        await any_database.close()
    assert written.changed == 1
    assert written.busy == [held_run.run_id]
    assert stored_free == {"percent": 2}
    assert pending_while_held == 1
    assert stored_while_held is None
    assert stored is not None
    assert (stored["percent"], stored["message"]) == (30, "while held")
