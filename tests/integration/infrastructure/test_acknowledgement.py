"""A message is acknowledged only once its run's outcome is in the database, on the
real Redis stream and PostgreSQL: a worker dying in between leaves the message to be
run again, never a run whose outcome existed only in the dead worker's memory."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import pytest
from redis.asyncio import Redis

from jobs_service.broker import build_broker
from jobs_service.client import JobsClient
from jobs_service.core.settings import Settings
from jobs_service.core.summary import Summary, make_summary
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.receiver import JobsReceiver
from jobs_service.infrastructure.redis_broker import StreamBroker
from jobs_service.infrastructure.repositories import runs
from jobs_service.infrastructure.runtime import Runtime
from tests.support.services import redis_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from asyncpg.transaction import Transaction
    from taskiq import AsyncBroker

    from jobs_service.infrastructure.models import JobRun

pytestmark = pytest.mark.anyio


async def count_invoices() -> Summary:
    """A run that ends at once."""
    return make_summary(processed=1)


async def report_slowly() -> Summary:
    """A run that outlives a worker's wait for its runs at shutdown."""
    await asyncio.sleep(1.0)
    return make_summary(processed=1)


async def _until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 15) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 - polls Redis and the database
            await asyncio.sleep(0.05)


@dataclass
class Deployment:
    """A migrated database of its own, a producer and a worker broker on a fresh
    stream, and a second database connection that can stall the recorder's writes."""

    runtime: Runtime
    producer: AsyncBroker
    worker: StreamBroker
    client: JobsClient
    locker: asyncpg.Connection

    async def pending(self) -> int:
        """Messages of the worker's stream not acknowledged yet."""
        async with Redis.from_url(redis_url()) as redis:
            info = await redis.xpending(self.worker.queue_name, self.worker.consumer_group_name)
        return int(info["pending"])

    async def run(self, run_id: str) -> JobRun:
        async with self.runtime.database.sessions() as session:
            row = await runs.get_run(session, run_id=run_id)
        assert row is not None
        return row

    async def stall_records(self) -> Transaction:
        """Lock ``job_runs`` until the returned transaction is rolled back."""
        lock = self.locker.transaction()
        await lock.start()
        await self.locker.execute("LOCK TABLE job_runs IN ACCESS EXCLUSIVE MODE")
        return lock


@pytest.fixture
async def deployment(empty_pg_url: str, redis_prefix: str) -> AsyncIterator[Deployment]:
    settings = Settings(
        database_url=empty_pg_url,
        redis_url=redis_url(),
        redis_prefix=f"{redis_prefix}-ack-{uuid.uuid4().hex[:6]}",
        broker={"xread_block_ms": 100},
    )
    runtime = Runtime(settings)
    await migrate.upgrade(runtime.database)
    await runtime.start()
    producer, worker = build_broker(settings), build_broker(settings)
    assert isinstance(worker, StreamBroker)
    for broker in (producer, worker):
        broker.register_task(count_invoices, "count_invoices")
        broker.register_task(report_slowly, "report_slowly")
        broker.state.runtime = runtime
        await broker.startup()
    locker = await asyncpg.connect(empty_pg_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        yield Deployment(runtime, producer, worker, JobsClient(producer, runtime), locker)
    finally:
        await locker.close()
        for broker in (producer, worker):
            await broker.shutdown()
        await runtime.stop()


@contextlib.asynccontextmanager
async def _listening(receiver: JobsReceiver) -> AsyncIterator[None]:
    """Run ``receiver`` for the block, then stop it as SIGTERM would."""
    finish = asyncio.Event()
    listening = asyncio.create_task(receiver.listen(finish))
    try:
        yield
    finally:
        finish.set()
        await asyncio.wait_for(listening, 15)


async def test_a_message_waits_for_its_runs_record_before_it_is_acknowledged(
    deployment: Deployment,
) -> None:
    """While the database holds the recorder's write (a lock here; a slow or lost
    database alike), the finished run's message stays pending; once the outcome is
    written, it is acknowledged."""
    worker = deployment.worker
    run_id = await deployment.client.enqueue("count_invoices", {})

    lock = await deployment.stall_records()
    async with _listening(JobsReceiver(worker, max_async_tasks=4, max_prefetch=2)):

        async def finished_and_held_back() -> bool:
            return worker.completions.held_back == 1

        await _until(finished_and_held_back)
        await asyncio.sleep(0.3)  # many flush intervals and acknowledgement windows
        assert await deployment.pending() == 1
        assert worker.completions.held_back == 1

        await lock.rollback()

        async def acknowledged() -> bool:
            return await deployment.pending() == 0

        await _until(acknowledged)
        row = await deployment.run(run_id)
        assert (row.status, row.summary) == ("succeeded", {"processed": 1, "errors": 0})
        assert worker.completions.held_back == 0


async def test_a_run_that_outlives_the_stop_waits_for_its_record_before_its_acknowledgement(
    deployment: Deployment,
) -> None:
    """SIGTERM while a run is longer than the worker waits for it: the run ends while
    the process shuts down. With the database stalled its message stays pending (for
    another worker, if this process exits first); once the outcome is written, it is
    acknowledged. It is never acknowledged before its outcome is in the database."""
    worker = deployment.worker
    run_id = await deployment.client.enqueue("report_slowly", {})

    receiver = JobsReceiver(worker, max_async_tasks=2, max_prefetch=0, wait_tasks_timeout=0.2)
    finish = asyncio.Event()
    listening = asyncio.create_task(receiver.listen(finish))

    async def running() -> bool:
        return receiver.in_hand == 1

    await _until(running)
    lock = await deployment.stall_records()
    try:
        finish.set()
        await asyncio.wait_for(listening, 15)  # returns with the run still going
        await worker.shutdown()  # as TaskIQ's worker does next, before the run ends

        async def finished_and_held_back() -> bool:
            return worker.completions.held_back == 1

        await _until(finished_and_held_back)
        await asyncio.sleep(0.3)  # many acknowledgement windows
        assert await deployment.pending() == 1
    finally:
        await lock.rollback()

    async def acknowledged() -> bool:
        return await deployment.pending() == 0

    await _until(acknowledged)
    assert (await deployment.run(run_id)).status == "succeeded"


async def test_a_worker_stopping_with_outcomes_unwritten_leaves_their_runs_to_run_again(
    empty_pg_url: str, pg_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first worker's database never takes its record (here: a database without the
    tables). It stops, and cannot acknowledge: the message goes to another worker,
    which runs it again and records it. Before, the message was acknowledged and the
    outcome, only in the stopped worker's memory, was gone."""
    monkeypatch.setattr("jobs_service.infrastructure.receiver._SHUTDOWN_FLUSH_S", 0.5)
    prefix = f"{redis_prefix}-ack2-{uuid.uuid4().hex[:6]}"
    broker_options = {"xread_block_ms": 100, "idle_timeout_s": 1, "reclaim_interval_s": 0.2}
    good = Settings(
        database_url=pg_url, redis_url=redis_url(), redis_prefix=prefix, broker=broker_options
    )
    lost = Settings(
        database_url=empty_pg_url, redis_url=redis_url(), redis_prefix=prefix, broker=broker_options
    )
    ran: list[str] = []

    async def note_invoice() -> Summary:
        ran.append("ran")
        return make_summary(processed=1)

    runtimes = [Runtime(good), Runtime(lost)]
    brokers = [build_broker(good), build_broker(lost), build_broker(good)]
    producer, first, second = brokers
    for runtime in runtimes:
        await runtime.start()
    for broker, runtime in zip(brokers, [runtimes[0], runtimes[1], runtimes[0]], strict=True):
        broker.register_task(note_invoice, "note_invoice")
        broker.state.runtime = runtime
        await broker.startup()
    try:
        run_id = await JobsClient(producer, runtimes[0]).enqueue("note_invoice", {})
        assert isinstance(first, StreamBroker)
        async with _listening(JobsReceiver(first, max_async_tasks=2)):

            async def ran_and_held_back() -> bool:
                return ran == ["ran"] and first.completions.held_back == 1

            await _until(ran_and_held_back)
        # Stopped: it let the unrecorded message go.
        assert first.held == {}

        async with _listening(JobsReceiver(second, max_async_tasks=2)):

            async def recorded_and_acknowledged() -> bool:
                await runtimes[0].recorder.wait_flushed()
                async with runtimes[0].database.sessions() as session:
                    row = await runs.get_run(session, run_id=run_id)
                async with Redis.from_url(redis_url()) as redis:
                    info = await redis.xpending(first.queue_name, first.consumer_group_name)
                return row is not None and row.status == "succeeded" and info["pending"] == 0

            await _until(recorded_and_acknowledged)
    finally:
        for broker in brokers:
            await broker.shutdown()
        for runtime in runtimes:
            await runtime.stop()
    assert ran == ["ran", "ran"]


async def test_a_worker_stops_reading_while_too_many_outcomes_wait_for_the_database(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With three finished runs waiting for a stalled database (the limit lowered to
    three), new messages are not read, so outcomes do not pile up in memory; once the
    database takes the records, reading resumes and every run is recorded."""
    monkeypatch.setattr("jobs_service.infrastructure.receiver.MAX_UNRECORDED", 3)
    worker, runtime, client = deployment.worker, deployment.runtime, deployment.client
    first = [await client.enqueue("count_invoices", {}) for _ in range(3)]
    lock = await deployment.stall_records()
    async with _listening(JobsReceiver(worker, max_async_tasks=10, max_prefetch=0)):

        async def paused() -> bool:
            return worker.completions.held_back == 3

        await _until(paused)
        await asyncio.sleep(0.3)  # a read already waiting in Redis (100 ms) has returned
        # The producer writes its queued rows after the send, so these four are queued
        # in Redis now, while their rows wait for the lock like the worker's records.
        sent = [asyncio.create_task(client.enqueue("count_invoices", {})) for _ in range(4)]
        await asyncio.sleep(0.5)
        assert len(worker.held) == 3  # the four new messages were not read
        await lock.rollback()
        later = await asyncio.gather(*sent)

        async def all_recorded() -> bool:
            async with runtime.database.sessions() as session:
                rows = [await runs.get_run(session, run_id=r) for r in [*first, *later]]
            return all(row is not None and row.status == "succeeded" for row in rows)

        await _until(all_recorded)
        assert worker.completions.held_back == 0
