"""Producers' keyless queued rows: shared statements, a dropped connection."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from jobs_service.core.ids import new_run_id
from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.queued_runs import QueuedRunWriter
from jobs_service.infrastructure.repositories import runs
from jobs_service.infrastructure.run_recorder import RunRecorder
from tests.support.run_events import finished_event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


@pytest.fixture
async def database(pg_url: str) -> AsyncIterator[Database]:
    db = Database(pg_url, DatabaseSettings())
    yield db
    await db.close()


def queued(key: str | None = None) -> runs.QueuedRun:
    return runs.QueuedRun(
        run_id=new_run_id(),
        task="count_items",
        kwargs={"items": ["a"]},
        source="api",
        queued_at=datetime.now(UTC),
        idempotency_key=key,
    )


async def _stored(database: Database, run_ids: list[str]) -> int:
    async with database.engine.connect() as connection:
        result = await connection.execute(
            text("SELECT count(*) FROM job_runs WHERE run_id = ANY(:ids)"), {"ids": run_ids}
        )
        return int(result.scalar_one())


async def test_concurrent_rows_share_statements_and_all_land(database: Database) -> None:
    """200 concurrent records: every row stored, in far fewer statements than rows."""
    writer = QueuedRunWriter(database)
    rows = [queued() for _ in range(200)]
    inserted = await asyncio.gather(*(writer.record(row) for row in rows))
    await writer.aclose()
    assert all(inserted)
    assert await _stored(database, [row.run_id for row in rows]) == 200
    assert writer.statements < 20


async def test_a_connection_the_database_dropped_is_replaced(database: Database) -> None:
    """After the server ends the kept connection, the next record still lands."""
    writer = QueuedRunWriter(database)
    assert await writer.record(queued())
    async with writer._connection.begin() as kept:  # the connection to pull away
        pid = (await kept.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
    async with database.engine.connect() as connection:
        ended = await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert ended.scalar_one() is True
    row = queued()
    assert await writer.record(row)
    await writer.aclose()
    assert await _stored(database, [row.run_id]) == 1


async def test_a_row_a_worker_wrote_first_is_kept_and_its_batch_still_lands(
    database: Database,
) -> None:
    """A keyless run can start and be recorded by its worker before the producer's
    insert lands (the message goes first). That row stays as the worker wrote it, the
    record answers False for it, and the other rows of the same statement are stored."""
    first = queued()
    recorder_row = finished_event(
        first.run_id,
        kwargs=first.kwargs,
        worker="test:1",
        duration_ms=3,
        queued_at=first.queued_at,
    )
    async with database.engine.begin() as connection:
        await runs.write_run_batch(connection, [recorder_row], [recorder_row.attempt_row()])
    writer = QueuedRunWriter(database)
    others = [queued() for _ in range(20)]
    inserted = await asyncio.gather(*(writer.record(row) for row in [first, *others]))
    await writer.aclose()
    assert inserted == [False] + [True] * 20
    assert await _stored(database, [row.run_id for row in others]) == 20
    async with database.engine.connect() as connection:
        status = await connection.scalar(
            text("SELECT status FROM job_runs WHERE run_id = :id"), {"id": first.run_id}
        )
    assert status == "succeeded"


async def _insertion_order(database: Database, run_ids: list[str]) -> list[str]:
    """``run_ids`` in the order their rows were inserted (``id`` is drawn per row)."""
    async with database.engine.connect() as connection:
        result = await connection.execute(
            text("SELECT run_id FROM job_runs WHERE run_id = ANY(:ids) ORDER BY id"),
            {"ids": run_ids},
        )
        return [str(row[0]) for row in result]


async def test_producers_and_workers_insert_runs_in_one_order(database: Database) -> None:
    """A producer's batch and a worker's flush may insert the same runs at once (the
    message is sent before its row). Both take the keys in run id order, whatever order
    their batch came in: in opposite orders each waits for a key the other holds until
    PostgreSQL's deadlock check cancels one, a second later (seen in a latency benchmark:
    every submit stalled for that second)."""
    writer = QueuedRunWriter(database)
    batch = sorted((queued() for _ in range(6)), key=lambda run: run.run_id, reverse=True)
    await writer.record_many(batch)
    await writer.aclose()
    produced = [run.run_id for run in batch]
    assert await _insertion_order(database, produced) == sorted(produced)

    recorder = RunRecorder(database, batch_size=500, flush_interval_s=10)
    run_ids = sorted(new_run_id() for _ in range(6))
    for index, run_id in enumerate(reversed(run_ids)):  # newest first, starts and finishes
        ended = finished_event(run_id)
        still_running = replace(ended, status="running", finished_at=None, duration_ms=None)
        recorder.record(ended if index % 2 else still_running)
    assert await recorder.flush() == 6
    await recorder.stop()
    assert await _insertion_order(database, run_ids) == run_ids
