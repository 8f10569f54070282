"""How a webhook event's runs end it, against the real PostgreSQL (and SQLite where the
writes differ).

A run that ends without a worker recording it (cancelled before it started, its worker
lost, an embedded process stopped) still ends its event: otherwise the event stayed
`enqueued`, and retention never took it. A run ends only the event that still points
to it: after a replay the event belongs to the new run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select, update

from jobs_service.core.ids import new_run_id
from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import JobRun, WebhookEvent
from jobs_service.infrastructure.repositories import runs, webhooks
from jobs_service.infrastructure.run_recorder import RunRecorder
from tests.support.run_events import finished_event
from tests.support.webhook_events import StoredEvent, store_events

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

LOST = {"type": "WorkerLost", "message": "gone"}


@pytest.fixture
async def database(empty_pg_url: str) -> AsyncIterator[Database]:
    db = Database(empty_pg_url, DatabaseSettings())
    await migrate.upgrade(db)
    yield db
    await db.close()


@pytest.fixture(params=["postgresql", "sqlite"])
async def either_database(
    request: pytest.FixtureRequest, empty_pg_url: str, sqlite_url: str
) -> AsyncIterator[Database]:
    """PostgreSQL (outcomes written in the recorder's single statement) or SQLite (in a
    transaction of updates)."""
    url = empty_pg_url if request.param == "postgresql" else sqlite_url
    db = Database(url, DatabaseSettings())
    await migrate.upgrade(db)
    yield db
    await db.close()


async def _replayed_event(database: Database, name: str) -> tuple[StoredEvent, str]:
    """An event processed by a first run that failed, replayed: it points to a new run.
    Returns the event (with its first run's id) and the new run's id."""
    async with database.engine.begin() as connection:
        [event] = (await store_events(connection, {name: ("failed", datetime.now(UTC))})).values()
    replay = new_run_id()
    async with database.engine.begin() as connection:
        assert await webhooks.point_to_run(connection, event.id, replay, datetime.now(UTC))
    return event, replay


async def _event_row(database: Database, event_id: int) -> WebhookEvent:
    async with database.sessions() as session:
        row = await session.get(WebhookEvent, event_id)
    assert row is not None
    return row


async def test_an_earlier_run_ending_leaves_a_replayed_event_to_its_new_run(
    either_database: Database,
) -> None:
    """The first run retried after the replay ends: it used to overwrite the event
    (status, and the run it points to), so the replay's run was never relayed or its
    outcome was lost. Now only the replay's run ends the event, even when both end in
    one flush, the earlier run recorded last."""
    database = either_database
    event, replay = await _replayed_event(database, "replayed")
    recorder = RunRecorder(database, batch_size=100, flush_interval_s=10)
    failed = {"type": "RuntimeError", "message": "still broken"}
    first_run = finished_event(event.run_id, status="failed", webhook_event_id=event.id)
    first_run.error = failed
    recorder.record(first_run)
    await recorder.flush()
    after_first = await _event_row(database, event.id)
    recorder.record(finished_event(replay, webhook_event_id=event.id))
    recorder.record(first_run)
    await recorder.flush()
    await recorder.stop()
    after_both = await _event_row(database, event.id)
    assert (after_first.status, after_first.run_id) == ("accepted", replay)
    assert (after_both.status, after_both.run_id, after_both.error) == (
        "processed",
        replay,
        None,
    )


async def test_a_replay_is_refused_while_the_event_is_in_progress(
    either_database: Database,
) -> None:
    """Pointing an accepted or enqueued event to another run is refused (two replays at
    once: the second loses), so the run it has is never orphaned."""
    database = either_database
    event, replay = await _replayed_event(database, "twice")
    async with database.engine.begin() as connection:
        again = await webhooks.point_to_run(connection, event.id, new_run_id(), datetime.now(UTC))
        await webhooks.mark_enqueued(connection, [(event.id, replay)], datetime.now(UTC))
        while_enqueued = await webhooks.point_to_run(
            connection, event.id, new_run_id(), datetime.now(UTC)
        )
    row = await _event_row(database, event.id)
    assert (again, while_enqueued) == (False, False)
    assert (row.status, row.run_id) == ("enqueued", replay)


async def test_a_late_mark_of_an_earlier_run_leaves_a_replayed_event_accepted(
    either_database: Database,
) -> None:
    """The "sent" mark of the event's first run, written late (marks go out in the
    background), must not pass the replay's run, not yet sent, off as enqueued: the
    relay would never send it, and the event could not be replayed again."""
    database = either_database
    event, replay = await _replayed_event(database, "late-mark")
    async with database.engine.begin() as connection:
        await webhooks.mark_enqueued(connection, [(event.id, event.run_id)], datetime.now(UTC))
    row = await _event_row(database, event.id)
    assert (row.status, row.run_id) == ("accepted", replay)


async def test_cancelling_an_earlier_run_leaves_a_replayed_event_alone(
    database: Database,
) -> None:
    """An earlier run of a replayed event, queued again and then cancelled, used to mark
    the event failed while its new run was still to run."""
    event, replay = await _replayed_event(database, "cancelled-earlier")
    now = datetime.now(UTC)
    async with database.engine.begin() as connection:
        await webhooks.mark_enqueued(connection, [(event.id, replay)], now)
        await runs.insert_queued_runs(
            connection,
            [
                runs.QueuedRun(
                    run_id=event.run_id,
                    task="process_webhook_event",
                    kwargs={"event_id": event.id},
                    source="webhook",
                    queued_at=now,
                    webhook_event_id=event.id,
                )
            ],
        )
    async with database.sessions() as session:
        earlier = await runs.get_run(session, run_id=event.run_id)
    assert earlier is not None
    error = {"type": "Cancelled", "message": "cancelled by ops"}
    async with database.engine.begin() as connection:
        assert await runs.mark_cancelled(connection, earlier, attempt=1, error=error, at=now)
    row = await _event_row(database, event.id)
    assert (row.status, row.run_id, row.error) == ("enqueued", replay, None)


async def _event_with_run(database: Database, name: str, queued_at: datetime) -> str:
    """An `enqueued` event and its `queued` run; returns the run id."""
    async with database.engine.begin() as connection:
        [event] = (await store_events(connection, {name: ("accepted", queued_at)})).values()
        run_id = event.run_id
        await webhooks.mark_enqueued(connection, [(event.id, run_id)], queued_at)
        await runs.insert_queued_runs(
            connection,
            [
                runs.QueuedRun(
                    run_id=run_id,
                    task="process_webhook_event",
                    kwargs={"event_id": event.id},
                    source="webhook",
                    queued_at=queued_at,
                    webhook_event_id=event.id,
                )
            ],
        )
    return run_id


async def _event_status(database: Database, name: str) -> tuple[str, str | None]:
    async with database.sessions() as session:
        event = (
            await session.execute(select(WebhookEvent).where(WebhookEvent.external_id == name))
        ).scalar_one()
    return event.status, (event.error or {}).get("type")


async def test_runs_ended_without_a_worker_end_their_events(database: Database) -> None:
    now = datetime.now(UTC)
    cancelled = await _event_with_run(database, "cancelled", now)
    lost = await _event_with_run(database, "lost", now - timedelta(minutes=10))
    await _event_with_run(database, "interrupted", now - timedelta(minutes=5))
    untouched = await _event_with_run(database, "untouched", now)
    async with database.sessions() as session:
        run = await runs.get_run(session, run_id=cancelled)
    assert run is not None
    error = {"type": "Cancelled", "message": "cancelled by ops"}
    async with database.engine.begin() as connection:
        assert await runs.mark_cancelled(connection, run, attempt=1, error=error, at=now)
        await connection.execute(
            update(JobRun)
            .where(JobRun.run_id == lost)
            .values(status="running", attempt=1, worker="gone:1:0badf00d", started_at=now)
        )
        recovered = await runs.fail_orphaned(
            connection,
            dead_workers=["gone:1:0badf00d"],
            started_before=now + timedelta(seconds=1),
            error=LOST,
            now=now,
        )
        interrupted = await runs.fail_unfinished(
            connection,
            before=now - timedelta(minutes=1),
            error={"type": "Interrupted", "message": "stopped"},
        )
    assert recovered == [lost]
    assert interrupted == 1
    assert await _event_status(database, "cancelled") == ("failed", "Cancelled")
    assert await _event_status(database, "lost") == ("failed", "WorkerLost")
    assert await _event_status(database, "interrupted") == ("failed", "Interrupted")
    assert await _event_status(database, "untouched") == ("enqueued", None)
    async with database.sessions() as session:
        still = await runs.get_run(session, run_id=untouched)
    assert still is not None
    assert still.status == "queued"


async def test_a_run_a_worker_ends_during_the_orphan_check_keeps_its_outcome_and_event(
    database: Database,
) -> None:
    """The recovery reads the stream's pending list between choosing runs and failing
    them. A run whose worker turns out alive and finishes it meanwhile (here: during
    that read) keeps its outcome, and its webhook event is not failed either."""
    now = datetime.now(UTC)
    finishing = await _event_with_run(database, "finished-meanwhile", now)
    async with database.engine.begin() as connection:
        await connection.execute(
            update(JobRun)
            .where(JobRun.run_id == finishing)
            .values(status="running", attempt=1, worker="slow:1:0badf00d", started_at=now)
        )

    async def finish_meanwhile(run_ids: list[str]) -> set[str]:
        assert run_ids == [finishing]
        async with database.engine.begin() as other:
            await runs.upsert_run_events(
                other, [finished_event(finishing, at=now, worker="slow:1:0badf00d")]
            )
        return set()

    async with database.engine.begin() as connection:
        recovered = await runs.fail_orphaned(
            connection,
            dead_workers=["slow:1:0badf00d"],
            started_before=now + timedelta(seconds=1),
            error=LOST,
            now=now,
            still_pending=finish_meanwhile,
        )
    assert recovered == []
    async with database.sessions() as session:
        run = await runs.get_run(session, run_id=finishing)
    assert run is not None
    assert run.status == "succeeded"
    assert await _event_status(database, "finished-meanwhile") == ("enqueued", None)
