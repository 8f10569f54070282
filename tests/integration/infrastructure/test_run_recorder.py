"""The batched run recorder against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import func, select

from jobs_service.core.ids import new_run_id
from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import JobRun, WebhookEvent
from jobs_service.infrastructure.repositories import runs
from jobs_service.infrastructure.repositories.runs_bulk import run_batch_statement
from jobs_service.infrastructure.run_recorder import RunRecorder

pytestmark = pytest.mark.anyio


@pytest.fixture
async def database(pg_url: str) -> Database:
    db = Database(pg_url, DatabaseSettings())
    yield db  # type: ignore[misc]
    await db.close()


def event(
    run_id: str,
    status: str,
    *,
    attempt: int = 1,
    task: str = "count_items",
    finished: bool = False,
    summary: dict[str, int] | None = None,
) -> runs.RunEvent:
    now = datetime.now(UTC)
    return runs.RunEvent(
        run_id=run_id,
        task=task,
        kwargs={"items": []},
        source="api",
        status=status,
        attempt=attempt,
        worker="test:1",
        queued_at=now - timedelta(seconds=1),
        started_at=now,
        finished_at=now if finished else None,
        duration_ms=5 if finished else None,
        summary=summary,
    )


async def fetch(database: Database, run_id: str) -> JobRun:
    async with database.sessions() as session:
        row = await runs.get_run(session, run_id=run_id)
    assert row is not None
    return row


async def test_many_events_are_written_in_few_statements(database: Database) -> None:
    """1,200 runs with start and finish become 1,200 rows, final state only, in 3 batches."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    task = f"batch_{uuid.uuid4().hex[:8]}"
    ids = [new_run_id() for _ in range(1200)]
    for run_id in ids:
        recorder.record(event(run_id, "running", task=task))
    for run_id in ids:
        recorder.record(event(run_id, "succeeded", task=task, finished=True, summary={"errors": 0}))
    assert recorder.pending == 1200  # coalesced per run
    assert await recorder.flush() == 1200
    async with database.sessions() as session:
        counts = dict(
            (
                await session.execute(
                    select(JobRun.status, func.count())
                    .where(JobRun.task == task)
                    .group_by(JobRun.status)
                )
            ).all()
        )
    assert counts == {"succeeded": 1200}
    row = await fetch(database, ids[0])
    assert row.started_at is not None
    assert row.summary == {"errors": 0}


async def test_background_flush_and_stop(database: Database) -> None:
    """Events are written by the timer without an explicit flush, and on stop."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=0.02)
    await recorder.start()
    first = new_run_id()
    recorder.record(event(first, "running"))
    await asyncio.wait_for(recorder.wait_flushed(), timeout=5)
    assert (await fetch(database, first)).status == "running"
    second = new_run_id()
    recorder.record(event(second, "succeeded", finished=True, summary={"errors": 0}))
    await recorder.stop()
    assert (await fetch(database, second)).status == "succeeded"


async def test_after_a_big_flush_the_next_one_waits_longer(database: Database) -> None:
    """A flush of 100 events or more means the worker is busy: the next flush waits five
    intervals (statements stay large and few under load); one small flush later the
    interval is back to normal."""
    interval = 0.02
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=interval)
    await recorder.start()

    async def written_after(count: int) -> float:
        """Seconds until the flusher wrote ``count`` new events on its own timer."""
        target = recorder.written + count
        began = time.perf_counter()
        for _ in range(count):
            recorder.record(event(new_run_id(), "succeeded", finished=True))
        while recorder.written < target:  # polled: wait_flushed would force a flush
            assert time.perf_counter() - began < 10
            await asyncio.sleep(0.001)
        return time.perf_counter() - began

    await written_after(150)  # a busy flush
    assert await written_after(1) >= 4.5 * interval  # stretched
    waits = [await written_after(1) for _ in range(5)]  # after a small flush: the interval
    await recorder.stop()
    assert min(waits) < 4.5 * interval


async def test_a_flush_waits_for_a_lull_between_runs_in_its_second_half(
    database: Database,
) -> None:
    """In a worker, a flush comes at the first run that ends with nothing else in hand
    once half the interval has passed: not earlier, not while other runs are in hand,
    and not as late as the timer."""
    interval = 2.0
    in_hand = [False]
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=interval)
    recorder.more_coming = lambda: in_hand[0]
    await recorder.start()
    began = time.perf_counter()

    recorder.record(event(new_run_id(), "succeeded", finished=True))  # a lull, first half
    await asyncio.sleep(0.5)
    assert recorder.written == 0

    await asyncio.sleep(1.2 - (time.perf_counter() - began))
    in_hand[0] = True
    recorder.record(event(new_run_id(), "succeeded", finished=True))  # others in hand
    await asyncio.sleep(0.3)
    assert recorder.written == 0

    in_hand[0] = False
    lull = time.perf_counter()
    recorder.record(event(new_run_id(), "succeeded", finished=True))
    while recorder.written < 3:  # polled: wait_flushed would force a flush
        assert time.perf_counter() - lull < 5
        await asyncio.sleep(0.005)
    await recorder.stop()
    assert time.perf_counter() - lull < 0.3
    assert time.perf_counter() - began < interval


async def test_without_a_lull_the_timer_ends_the_interval(database: Database) -> None:
    """A worker that always has other runs in hand flushes on its timer all the same."""
    interval = 0.2
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=interval)
    recorder.more_coming = lambda: True
    await recorder.start()
    began = time.perf_counter()
    recorder.record(event(new_run_id(), "succeeded", finished=True))
    while recorder.written < 1:
        assert time.perf_counter() - began < 5
        await asyncio.sleep(0.005)
    await recorder.stop()
    assert time.perf_counter() - began >= interval * 0.9


async def test_a_stale_attempt_never_overwrites_a_newer_one(database: Database) -> None:
    """Attempt 2's state survives a late event of attempt 1."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    run_id = new_run_id()
    recorder.record(event(run_id, "running", attempt=2))
    await recorder.flush()
    recorder.record(event(run_id, "failed", attempt=1, finished=True))
    await recorder.flush()
    row = await fetch(database, run_id)
    assert (row.status, row.attempt) == ("running", 2)


async def test_a_late_queued_insert_does_not_rewind_a_run(database: Database) -> None:
    """The producer's queued row is ignored when the worker already wrote the run."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    run_id = new_run_id()
    recorder.record(event(run_id, "succeeded", finished=True, summary={"errors": 0}))
    await recorder.flush()
    queued = runs.QueuedRun(
        run_id=run_id, task="count_items", kwargs={}, source="api", queued_at=datetime.now(UTC)
    )
    async with database.engine.begin() as connection:
        await runs.insert_queued_runs(connection, [queued])
    assert (await fetch(database, run_id)).status == "succeeded"


async def test_events_survive_a_database_outage(empty_pg_url: str) -> None:
    """A failed write keeps the events; once the database is back they are written."""
    database = Database(empty_pg_url, DatabaseSettings())  # not migrated: writes fail
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    run_id = new_run_id()
    recorder.record(event(run_id, "running"))
    with pytest.raises(Exception, match="job_runs"):
        await recorder.flush()
    assert recorder.pending == 1
    recorder.record(event(run_id, "succeeded", finished=True, summary={"errors": 0}))
    await migrate.upgrade(database)  # the database "comes back"
    assert await recorder.flush() == 1
    row = await fetch(database, run_id)
    assert row.status == "succeeded"
    assert row.started_at is not None
    await database.close()


async def test_the_written_mark_moves_only_past_events_really_written(empty_pg_url: str) -> None:
    """``written`` is what acknowledgements wait for: a failed flush leaves it where it
    was, the flush that writes the events moves it past them and says so."""
    database = Database(empty_pg_url, DatabaseSettings())  # not migrated: writes fail
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    told: list[int] = []
    recorder.on_written = told.append
    recorder.record(event(new_run_id(), "succeeded", finished=True))
    recorder.record(event(new_run_id(), "failed", finished=True))
    with pytest.raises(Exception, match="job_runs"):
        await recorder.flush()
    assert (recorder.recorded, recorder.written, told) == (2, 0, [])
    await migrate.upgrade(database)
    assert await recorder.flush() == 2
    assert (recorder.recorded, recorder.written, told) == (2, 2, [2])
    await recorder.stop()
    await database.close()


async def test_an_outage_is_retried_with_backoff_not_in_a_busy_loop(empty_pg_url: str) -> None:
    """With a full batch waiting, every new event used to wake the flusher at once,
    skipping the backoff: a thousand failed flushes a second. Then ``stop`` logs what it
    could not write instead of raising (those runs' messages were not acknowledged)."""
    database = Database(empty_pg_url, DatabaseSettings())  # not migrated: writes fail
    recorder = RunRecorder(database, batch_size=10, flush_interval_s=0.01)
    attempts = 0
    write = recorder._write

    async def counted(*args: object) -> None:
        nonlocal attempts
        attempts += 1
        await write(*args)  # type: ignore[arg-type]

    recorder._write = counted  # type: ignore[method-assign]
    await recorder.start()
    for _ in range(400):
        recorder.record(event(new_run_id(), "succeeded", finished=True))
        await asyncio.sleep(0.0025)
    assert 1 <= attempts <= 6  # backoff 0.2, 0.4, 0.8 s within the second
    await recorder.stop()  # one last try, logged: no exception
    assert recorder.written == 0
    assert recorder.pending == 400
    await database.close()


async def test_a_duplicate_start_never_rewinds_a_finished_attempt(database: Database) -> None:
    """A redelivered message starting attempt 1 again leaves the succeeded run alone."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    run_id = new_run_id()
    recorder.record(event(run_id, "succeeded", finished=True, summary={"errors": 0}))
    await recorder.flush()
    recorder.record(event(run_id, "running"))
    await recorder.flush()
    row = await fetch(database, run_id)
    assert row.status == "succeeded"
    assert row.finished_at is not None
    recorder.record(event(run_id, "running", attempt=2))  # a real retry still applies
    await recorder.flush()
    assert (await fetch(database, run_id)).status == "running"


async def test_an_event_the_database_refuses_does_not_block_the_others(database: Database) -> None:
    """A poisoned event (kwargs that are not JSON) is dropped; its batch is still written."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    good, bad = new_run_id(), new_run_id()
    poisoned = event(bad, "running")
    poisoned.kwargs = {"target": object()}
    recorder.record(event(good, "running"))
    recorder.record(poisoned)
    await recorder.flush()
    assert (await fetch(database, good)).status == "running"
    async with database.sessions() as session:
        missing = await runs.get_run(session, run_id=bad)
    assert missing is None
    assert recorder._pending == {}


async def test_a_redelivered_copy_of_a_finished_attempt_cannot_change_its_outcome(
    database: Database,
) -> None:
    """Attempt 1 succeeded; a second copy of attempt 1 failing later changes nothing."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    run_id = new_run_id()
    recorder.record(event(run_id, "succeeded", attempt=1, finished=True))
    await recorder.flush()
    recorder.record(event(run_id, "running", attempt=1))
    await recorder.flush()
    recorder.record(event(run_id, "failed", attempt=1, finished=True))
    await recorder.flush()
    assert (await fetch(database, run_id)).status == "succeeded"
    recorder.record(event(run_id, "running", attempt=2))  # a real retry still applies
    await recorder.flush()
    row = await fetch(database, run_id)
    assert (row.status, row.attempt) == ("running", 2)
    recorder.record(event(run_id, "retrying", attempt=1, finished=True))  # stale
    await recorder.flush()
    assert ((await fetch(database, run_id)).status, row.attempt) == ("running", 2)


async def test_a_value_postgresql_rejects_is_dropped_not_retried_forever(
    database: Database,
) -> None:
    """A duration beyond the integer column (SQLSTATE 22003) loses that event only."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    good, bad = new_run_id(), new_run_id()
    poisoned = event(bad, "failed", finished=True)
    poisoned.duration_ms = 2**40
    recorder.record(poisoned)
    recorder.record(event(good, "running"))
    await recorder.flush()
    assert (await fetch(database, good)).status == "running"
    assert recorder._pending == {}


async def test_text_postgresql_refuses_is_recorded_with_replacement_characters(
    database: Database,
) -> None:
    """A NUL in a run's content, summary keys or error message (text from a domain
    answer or an exception) made PostgreSQL refuse the run's record, which was dropped:
    the run stayed running for ever. It is written with U+FFFD in its place, and so is
    the error on the run's webhook event; a backslash followed by u0000 (text, not a
    NUL) is kept as it was written."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    now = datetime.now(UTC)
    succeeded, failed = new_run_id(), new_run_id()
    async with database.sessions() as session:
        hook = WebhookEvent(
            source="billing",
            external_id=uuid.uuid4().hex,
            headers={},
            body="{}",
            task="count_items",
            run_id=failed,
            status="enqueued",
            received_at=now,
            updated_at=now,
        )
        session.add(hook)
        await session.commit()
    done = event(succeeded, "succeeded", finished=True, summary={"rows\x00": 1, "errors": 0})
    done.content = "Weekly KPIs\x00 from C:\\u0000"
    broken = event(failed, "failed", finished=True)
    broken.error = {"type": "RuntimeError", "message": "bad\x00byte"}
    broken.webhook_event_id = hook.id
    recorder.record(done)
    recorder.record(broken)
    await recorder.flush()
    done_row, failed_row = await fetch(database, succeeded), await fetch(database, failed)
    async with database.sessions() as session:
        stored_hook = await session.get(WebhookEvent, hook.id)
        attempts = await runs.list_attempts(session, failed_row)
    assert done_row.status == "succeeded"
    assert done_row.content == "Weekly KPIs\ufffd from C:\\u0000"
    assert done_row.summary == {"rows\ufffd": 1, "errors": 0}
    assert failed_row.status == "failed"
    assert failed_row.error == {"type": "RuntimeError", "message": "bad\ufffdbyte"}
    assert [attempt.error for attempt in attempts] == [failed_row.error]
    assert stored_hook is not None
    assert (stored_hook.status, stored_hook.error) == ("failed", failed_row.error)


async def test_a_start_is_written_only_for_a_run_still_running_at_the_flush(
    database: Database,
) -> None:
    """Two starts noted; one run ends before the flush: its end is all that is written,
    while the other shows as running, and later as finished."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    quick, slow = new_run_id(), new_run_id()
    built: list[str] = []

    def start_of(run_id: str) -> runs.RunEvent:
        built.append(run_id)
        return event(run_id, "running")

    recorder.record_start(quick, lambda: start_of(quick))
    recorder.record_start(slow, lambda: start_of(slow))
    recorder.record(event(quick, "succeeded", finished=True, summary={"errors": 0}))
    assert recorder.pending == 2
    assert await recorder.flush() == 2
    assert built == [slow]  # the quick run's start was never even built
    assert (await fetch(database, quick)).status == "succeeded"
    assert (await fetch(database, slow)).status == "running"
    recorder.record(event(slow, "succeeded", finished=True, summary={"errors": 0}))
    await recorder.flush()
    assert (await fetch(database, slow)).status == "succeeded"


async def test_a_flush_finds_its_runs_through_the_index_however_the_history_grew(
    empty_pg_url: str,
) -> None:
    """A long-running worker's flush statement is planned once, while the history is
    small (a prepared statement's generic plan), and used as the table grows. It must
    still find its runs through the run id index at 6,000 runs: a scan of the whole
    table per flush costs the database more with every run the history holds."""
    database = Database(empty_pg_url, DatabaseSettings())
    await migrate.upgrade(database)
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)

    async def queued(count: int) -> list[str]:
        made = [
            runs.QueuedRun(
                run_id=new_run_id(),
                task="count_items",
                kwargs={},
                source="api",
                queued_at=datetime.now(UTC),
            )
            for _ in range(count)
        ]
        async with database.engine.begin() as connection:
            await runs.insert_queued_runs(connection, made)
        return [run.run_id for run in made]

    for _ in range(8):  # enough flushes for PostgreSQL to settle on a generic plan
        for run_id in await queued(5):
            recorder.record(event(run_id, "succeeded", finished=True))
        await recorder.flush()
    await queued(6000)
    batch = [event(run_id, "succeeded", finished=True) for run_id in await queued(60)]
    scans_of_job_runs = (
        "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'job_runs'"
    )
    # The recorder's own connection and prepared statement, in a transaction of the
    # test's (the statement's counters are per transaction).
    driver = recorder._connection._driver
    statement = run_batch_statement(batch, [e.attempt_row() for e in batch], [], datetime.now(UTC))
    async with driver.transaction():
        before = await driver.fetchrow(scans_of_job_runs)
        await driver.fetch(*statement)
        after = await driver.fetchrow(scans_of_job_runs)
    await recorder.stop()
    async with database.sessions() as session:
        finished = await session.scalar(
            select(func.count()).select_from(JobRun).where(JobRun.status == "succeeded")
        )
    await database.close()
    assert finished == 8 * 5 + 60
    assert after["seq_scan"] - before["seq_scan"] == 0
    assert after["idx_scan"] - before["idx_scan"] > 0


async def test_a_flush_is_one_statement_with_its_webhook_outcomes_and_no_transaction(
    database: Database,
) -> None:
    """On PostgreSQL a flush is a single statement in autocommit (no BEGIN or COMMIT:
    two round trips fewer for the worker), and the outcomes of webhook events whose
    runs ended (processed, failed) are written in that same statement."""
    sent: list[str] = []

    def log_queries(dbapi_connection: object, record: object) -> None:
        driver = record.driver_connection  # type: ignore[attr-defined]
        driver.add_query_logger(lambda query: sent.append(query.query))

    sqlalchemy_event.listen(database.engine.sync_engine, "connect", log_queries)
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    now = datetime.now(UTC)
    good, bad, plain = new_run_id(), new_run_id(), new_run_id()
    async with database.sessions() as session:
        events = [
            WebhookEvent(
                source="billing",
                external_id=uuid.uuid4().hex,
                headers={},
                body="{}",
                task="count_items",
                run_id=run_id,
                status="enqueued",
                received_at=now,
                updated_at=now,
            )
            for run_id in (good, bad)
        ]
        session.add_all(events)
        await session.commit()
    recorder.record(event(new_run_id(), "running"))
    await recorder.flush()  # opens the recorder's connection
    await asyncio.sleep(0.05)  # the driver calls query loggers soon after, not at once
    sent.clear()
    for run_id, hook, status in ((good, events[0], "succeeded"), (bad, events[1], "dead")):
        finished = event(run_id, status, finished=True, summary={"errors": 0})
        finished.webhook_event_id = hook.id
        if status == "dead":
            finished.error = {"type": "PermanentError", "message": "refused"}
        recorder.record(finished)
    recorder.record(event(plain, "succeeded", finished=True, summary={"errors": 0}))
    assert await recorder.flush() == 3
    await recorder.stop()
    await asyncio.sleep(0.05)
    assert len(sent) == 1
    assert sent[0].startswith("WITH webhooks_finished AS (UPDATE webhook_events")
    async with database.sessions() as session:
        stored = {
            row.id: row
            for row in await session.scalars(
                select(WebhookEvent).where(WebhookEvent.id.in_([e.id for e in events]))
            )
        }
    assert (stored[events[0].id].status, stored[events[0].id].run_id) == ("processed", good)
    assert stored[events[1].id].status == "failed"
    assert stored[events[1].id].error == {"type": "PermanentError", "message": "refused"}
    assert (await fetch(database, plain)).status == "succeeded"
