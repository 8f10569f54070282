"""Per-attempt history (`run_attempts`) and the operator's state changes, against the
real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from jobs_service.core.ids import new_run_id
from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import JobRun, RunAttempt
from jobs_service.infrastructure.repositories import runs
from jobs_service.infrastructure.run_recorder import RunRecorder

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

CANCELLED = {"type": "Cancelled", "message": "cancelled by operator"}


@pytest.fixture
async def database(pg_url: str) -> AsyncIterator[Database]:
    db = Database(pg_url, DatabaseSettings())
    yield db
    await db.close()


def event(
    run_id: str,
    status: str,
    *,
    attempt: int = 1,
    finished: bool = True,
    worker: str = "test:1",
    error: dict[str, str] | None = None,
) -> runs.RunEvent:
    now = datetime.now(UTC)
    return runs.RunEvent(
        run_id=run_id,
        task="count_items",
        kwargs={"items": []},
        source="api",
        status=status,
        attempt=attempt,
        worker=worker,
        queued_at=now - timedelta(seconds=1),
        started_at=now,
        finished_at=now if finished else None,
        duration_ms=7 if finished else None,
        error=error,
    )


async def listed(database: Database, run_id: str) -> list[RunAttempt]:
    """The attempts ``GET /v1/runs/{run_id}`` lists; none for a run that is gone."""
    async with database.sessions() as session:
        run = await runs.get_run(session, run_id=run_id)
        return [] if run is None else await runs.list_attempts(session, run)


async def attempts(database: Database, run_id: str) -> list[tuple[int, str, str | None]]:
    return [(row.attempt, row.status, row.worker) for row in await listed(database, run_id)]


async def stored(database: Database, run_ids: list[str]) -> int:
    """Rows of ``run_attempts`` for ``run_ids``."""
    async with database.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(RunAttempt).where(RunAttempt.run_id.in_(run_ids))
        )
    return int(count or 0)


async def fetch(database: Database, run_id: str) -> JobRun:
    async with database.sessions() as session:
        row = await runs.get_run(session, run_id=run_id)
    assert row is not None
    return row


async def test_every_attempt_is_kept_even_when_they_end_within_one_flush(
    database: Database,
) -> None:
    """The run row keeps the latest state only; each attempt's end gets its own row,
    written in the same flush."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    run_id = new_run_id()
    retry_later = {"type": "RetryLater", "message": "try later"}
    recorder.record(event(run_id, "running", finished=False))
    recorder.record(event(run_id, "retrying", error=retry_later))
    recorder.record(event(run_id, "running", attempt=2, finished=False))
    recorder.record(event(run_id, "succeeded", attempt=2, worker="test:2"))
    assert await recorder.flush() == 1
    row = await fetch(database, run_id)
    assert (row.status, row.attempt) == ("succeeded", 2)
    first, second = await listed(database, run_id)
    assert (first.attempt, first.status, first.error) == (1, "retrying", retry_later)
    assert (second.attempt, second.status, second.worker) == (2, "succeeded", "test:2")
    assert second.started_at is not None
    assert second.finished_at is not None
    assert second.duration_ms == 7


async def test_many_runs_and_their_attempts_are_written_in_batches(database: Database) -> None:
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    ids = [new_run_id() for _ in range(1200)]
    for run_id in ids:
        recorder.record(event(run_id, "retrying"))
        recorder.record(event(run_id, "succeeded", attempt=2))
    assert await recorder.flush() == 1200
    # The retried attempts have rows; each succeeded one is its run's row.
    assert await stored(database, ids) == 1200
    assert [a[:2] for a in await attempts(database, ids[-1])] == [(1, "retrying"), (2, "succeeded")]


async def test_a_succeeded_attempt_is_listed_from_its_run_without_a_row_of_its_own(
    database: Database,
) -> None:
    """Nearly every run succeeds at its first attempt: the run's row says all there is
    to say about that attempt, so the flush writes one row, not two, and the attempt is
    listed all the same, with its worker and times."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    run_id = new_run_id()
    recorder.record(event(run_id, "succeeded", worker="runner:1"))
    await recorder.flush()
    assert await stored(database, [run_id]) == 0
    run = await fetch(database, run_id)
    [attempt] = await listed(database, run_id)
    assert (attempt.attempt, attempt.status, attempt.worker, attempt.error) == (
        1,
        "succeeded",
        "runner:1",
        None,
    )
    assert (attempt.started_at, attempt.finished_at, attempt.duration_ms) == (
        run.started_at,
        run.finished_at,
        7,
    )


async def test_a_redelivered_copy_of_an_attempt_does_not_change_its_row(
    database: Database,
) -> None:
    """As in the run row, the first end of an attempt stands, within a flush or across."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    run_id = new_run_id()
    recorder.record(event(run_id, "succeeded", worker="first:1"))
    recorder.record(event(run_id, "failed", worker="second:1"))
    await recorder.flush()
    recorder.record(event(run_id, "running", worker="third:1", finished=False))
    recorder.record(event(run_id, "failed", worker="third:1"))
    await recorder.flush()
    assert await attempts(database, run_id) == [(1, "succeeded", "first:1")]
    assert await stored(database, [run_id]) == 0
    run = await fetch(database, run_id)
    assert (run.status, run.worker) == ("succeeded", "first:1")


async def test_a_cancel_writes_the_attempt_and_its_worker_completes_it(
    database: Database,
) -> None:
    """Cancelled while running: the run is cancelled at once with an attempt row no
    worker wrote; the worker's own record of that attempt then fills it in, but cannot
    move the run away from cancelled."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    run_id = new_run_id()
    recorder.record(event(run_id, "running", finished=False))
    await recorder.flush()
    running = await fetch(database, run_id)
    async with database.engine.begin() as connection:
        done = await runs.mark_cancelled(
            connection, running, attempt=1, error=CANCELLED, at=datetime.now(UTC)
        )
        again = await runs.mark_cancelled(
            connection, running, attempt=1, error=CANCELLED, at=datetime.now(UTC)
        )
    assert (done, again) == (True, False)  # the second operator lost the race
    assert await attempts(database, run_id) == [(1, "cancelled", None)]
    recorder.record(event(run_id, "cancelled", error=CANCELLED, worker="runner:1"))
    await recorder.flush()
    row = await fetch(database, run_id)
    assert (row.status, row.error) == ("cancelled", CANCELLED)
    [attempt] = await listed(database, run_id)
    assert (attempt.status, attempt.worker, attempt.duration_ms) == ("cancelled", "runner:1", 7)


async def test_a_queued_run_cancelled_records_the_attempt_that_never_started(
    database: Database,
) -> None:
    run_id = new_run_id()
    queued = runs.QueuedRun(
        run_id=run_id, task="count_items", kwargs={}, source="api", queued_at=datetime.now(UTC)
    )
    async with database.engine.begin() as connection:
        await runs.insert_queued_runs(connection, [queued])
    row = await fetch(database, run_id)
    async with database.engine.begin() as connection:
        await runs.mark_cancelled(connection, row, attempt=1, error=CANCELLED, at=datetime.now(UTC))
    row = await fetch(database, run_id)
    assert (row.status, row.attempt, row.started_at) == ("cancelled", 1, None)
    [attempt] = await listed(database, run_id)
    assert (attempt.attempt, attempt.started_at, attempt.worker) == (1, None, None)


async def test_a_retry_requeues_a_finished_run_once_and_can_be_undone(
    database: Database,
) -> None:
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    run_id = new_run_id()
    failure = {"type": "RuntimeError", "message": "boom"}
    recorder.record(event(run_id, "dead", attempt=3, error=failure))
    await recorder.flush()
    dead = await fetch(database, run_id)
    now = datetime.now(UTC)
    async with database.engine.begin() as connection:
        first = await runs.requeue_finished(connection, dead, queued_at=now)
        second = await runs.requeue_finished(connection, dead, queued_at=now)
    assert (first, second) == (True, False)
    queued = await fetch(database, run_id)
    assert (queued.status, queued.attempt, queued.error, queued.finished_at) == (
        "queued",
        3,
        None,
        None,
    )
    assert await attempts(database, run_id) == [(3, "dead", "test:1")]  # history stays
    async with database.engine.begin() as connection:
        await runs.restore_finished(connection, dead)
    restored = await fetch(database, run_id)
    assert (restored.status, restored.error, restored.queued_at) == (
        "dead",
        failure,
        dead.queued_at,
    )


async def test_cleanup_deletes_a_runs_attempts_with_it(database: Database) -> None:
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    old, recent = new_run_id(), new_run_id()
    recorder.record(event(old, "retrying"))
    recorder.record(event(old, "succeeded", attempt=2))
    recorder.record(event(recent, "succeeded"))
    await recorder.flush()
    async with database.engine.begin() as connection:
        await connection.execute(
            JobRun.__table__.update()
            .where(JobRun.run_id == old)
            .values(finished_at=datetime.now(UTC) - timedelta(days=90))
        )
    async with database.sessions() as session, session.begin():
        while await runs.delete_finished_before(
            session, datetime.now(UTC) - timedelta(days=30), batch_size=1000
        ):
            pass
    assert await attempts(database, old) == []
    assert await attempts(database, recent) == [(1, "succeeded", "test:1")]


async def test_attempts_survive_a_database_outage(empty_pg_url: str) -> None:
    database = Database(empty_pg_url, DatabaseSettings())  # not migrated: writes fail
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    run_id = new_run_id()
    recorder.record(event(run_id, "retrying"))
    with pytest.raises(Exception, match="job_runs"):
        await recorder.flush()
    recorder.record(event(run_id, "succeeded", attempt=2))
    await migrate.upgrade(database)
    assert await recorder.flush() == 1
    assert [a[:2] for a in await attempts(database, run_id)] == [(1, "retrying"), (2, "succeeded")]
    await database.close()


async def test_an_attempt_postgresql_refuses_loses_only_its_own_run(database: Database) -> None:
    """A duration beyond the integer column (SQLSTATE 22003) is refused for good."""
    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    good, bad = new_run_id(), new_run_id()
    refused = event(bad, "failed", error={"type": "E", "message": "too long"})
    refused.duration_ms = 2**40
    recorder.record(refused)
    recorder.record(event(good, "retrying"))
    await recorder.flush()
    assert await attempts(database, good) == [(1, "retrying", "test:1")]
    assert await attempts(database, bad) == []
    assert recorder._attempts == {}
