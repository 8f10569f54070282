"""The producer client against the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import redis
from redis.asyncio import ConnectionPool, Redis
from sqlalchemy import func, select, update
from taskiq import TaskiqMessage, TaskiqMiddleware

from jobs_service.broker import build_broker, stream_names
from jobs_service.client import FIRST_CHUNK, EnqueueError, JobsClient, RunStateError
from jobs_service.core.settings import Settings
from jobs_service.infrastructure.cancellations import read_cancellation
from jobs_service.infrastructure.models import JobRun
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.tasks.registry import list_tasks
from tests.support.services import redis_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


@pytest.fixture
async def production(pg_url: str, redis_prefix: str) -> AsyncIterator[tuple[JobsClient, Settings]]:
    """A Redis-stream broker with the shared tasks, and a runtime on PostgreSQL."""
    import uuid  # noqa: PLC0415

    settings = Settings(
        database_url=pg_url,
        redis_url=redis_url(),
        redis_prefix=f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
    )
    broker = build_broker(settings)
    from jobs_service.broker import broker as shared  # noqa: PLC0415

    for info in list_tasks(shared):  # same task table, other transport
        broker.register_task(info.task.original_func, info.name, **info.task.labels)
    runtime = Runtime(settings)
    broker.state.runtime = runtime
    await broker.startup()
    yield JobsClient(broker, runtime), settings
    await broker.shutdown()
    await runtime.stop()


async def stream_length(settings: Settings) -> int:
    async with Redis.from_url(redis_url()) as redis:
        return int(await redis.xlen(stream_names(settings)["stream"]))


async def test_enqueue_records_queued_and_sends(production: tuple[JobsClient, Settings]) -> None:
    """The row is queued with its metadata and one message is on the stream."""
    client, settings = production
    run_id = await client.enqueue("count_items", {"items": ["a"]}, source="cli")
    run = await client.get_run(run_id)
    assert run is not None
    assert (run.status, run.source, run.attempt, run.kwargs) == (
        "queued",
        "cli",
        0,
        {"items": ["a"]},
    )
    assert await stream_length(settings) == 1


async def test_enqueue_many_queues_every_run_of_a_batch(
    production: tuple[JobsClient, Settings],
) -> None:
    """1,000 runs: all rows queued, all messages on the stream, ids in order."""
    client, settings = production
    run_ids = await client.enqueue_many("count_items", [{"items": [str(n)]} for n in range(1000)])
    assert len(set(run_ids)) == 1000
    assert await stream_length(settings) == 1000
    async with client._database.sessions() as session:
        queued = (
            await session.execute(
                select(func.count()).select_from(JobRun).where(JobRun.run_id.in_(run_ids))
            )
        ).scalar_one()
    assert queued == 1000


async def test_concurrent_submits_with_one_key_make_one_run(
    production: tuple[JobsClient, Settings],
) -> None:
    """20 concurrent submits with the same Idempotency-Key: one run, one message."""
    client, settings = production
    key = f"key-{settings.redis_prefix}"
    results = await asyncio.gather(
        *[client.submit("count_items", {"items": ["x"]}, idempotency_key=key) for _ in range(20)]
    )
    assert len({result.run_id for result in results}) == 1
    assert sum(not result.replayed for result in results) == 1
    assert await stream_length(settings) == 1


async def test_broker_down_leaves_nothing_queued(pg_url: str) -> None:
    """If Redis refuses the message, the caller gets EnqueueError and no row remains."""
    settings = Settings(
        database_url=pg_url, redis_url="redis://127.0.0.1:1/0", redis_prefix="jobs-test-down"
    )
    broker = build_broker(settings)
    from jobs_service.broker import broker as shared  # noqa: PLC0415

    info = next(info for info in list_tasks(shared) if info.name == "count_items")
    broker.register_task(info.task.original_func, info.name)
    runtime = Runtime(settings)
    client = JobsClient(broker, runtime)
    with pytest.raises(EnqueueError, match="did not accept"):
        await client.enqueue("count_items", {"items": ["lost?"]})
    async with runtime.database.sessions() as session:
        leftover = (
            await session.execute(
                select(func.count())
                .select_from(JobRun)
                .where(JobRun.kwargs["items"][0].as_string() == "lost?")
            )
        ).scalar_one()
    assert leftover == 0
    await runtime.stop()


async def test_a_run_without_a_key_is_queued_while_the_database_refuses_its_row(
    redis_prefix: str,
) -> None:
    """A keyless run is sent, then recorded: when only the row fails, the message is on
    the stream all the same (the worker writes the row when it runs it). So are the
    runs of a batch, chunk after chunk."""
    settings = Settings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/nowhere",
        redis_url=redis_url(),
        redis_prefix=f"{redis_prefix}-norow",
    )
    broker = build_broker(settings)
    from jobs_service.broker import broker as shared  # noqa: PLC0415

    info = next(info for info in list_tasks(shared) if info.name == "count_items")
    broker.register_task(info.task.original_func, info.name)
    runtime = Runtime(settings)
    await broker.startup()
    try:
        client = JobsClient(broker, runtime)
        run_id = await client.enqueue("count_items", {"items": ["a"]})
        # A batch the same: every chunk is sent, then its rows fail and are left.
        batch = await client.enqueue_many("count_items", [{"items": [str(n)]} for n in range(150)])
        async with Redis.from_url(redis_url()) as redis_client:
            entries = await redis_client.xrange(stream_names(settings)["stream"])
        assert len(entries) == 151
        assert run_id.encode() in b"".join(entries[0][1].values())
        assert len(batch) == len(set(batch)) == 150
        sent = b"".join(b"".join(fields.values()) for _, fields in entries[1:])
        assert all(batch_id.encode() in sent for batch_id in batch)
    finally:
        await broker.shutdown()
        await runtime.stop()


class _BreakStreamAfterFirstSend(TaskiqMiddleware):
    """After the first chunk is sent, turn the stream key into a string: Redis then
    refuses every later XADD (WRONGTYPE), as a broker failing mid-batch would."""

    def __init__(self, stream: str) -> None:
        super().__init__()
        self.stream = stream
        self.broken = False

    def post_send(self, message: TaskiqMessage) -> None:
        del message
        if not self.broken:
            self.broken = True
            with redis.Redis.from_url(redis_url()) as sync_redis:
                sync_redis.delete(self.stream)
                sync_redis.set(self.stream, "not a stream")


async def test_a_broker_failing_midway_through_a_batch_says_which_runs_were_queued(
    production: tuple[JobsClient, Settings],
) -> None:
    """600 runs go in chunks: the first chunk is queued and reported, the rest is not."""
    client, settings = production
    stream = stream_names(settings)["stream"]
    client.broker.add_middlewares(_BreakStreamAfterFirstSend(stream))
    items = [{"items": [f"midway-{settings.redis_prefix}-{n}"]} for n in range(600)]
    with pytest.raises(EnqueueError) as raised:
        await client.enqueue_many("count_items", items)
    queued = raised.value.queued
    assert len(queued) == FIRST_CHUNK
    async with client._database.sessions() as session:
        rows = (
            await session.execute(
                select(JobRun.run_id, JobRun.status).where(
                    JobRun.kwargs["items"][0].as_string().like(f"midway-{settings.redis_prefix}-%")
                )
            )
        ).all()
    assert sorted(run_id for run_id, _ in rows) == sorted(queued)
    assert {status for _, status in rows} == {"queued"}
    async with Redis.from_url(redis_url()) as cleanup:
        await cleanup.delete(stream)


async def test_runs_sent_by_the_client_ask_for_no_taskiq_result(
    production: tuple[JobsClient, Settings],
) -> None:
    """The run history keeps the outcome; the message says not to copy it into Redis."""
    client, settings = production
    await client.enqueue("count_items", {"items": ["label"]})
    async with Redis.from_url(redis_url()) as redis:
        [(_, fields)] = await redis.xrange(stream_names(settings)["stream"], count=1)
    message = TaskiqMessage.model_validate_json(fields[b"data"])
    message.parse_labels()
    assert message.labels["store_result"] is False


async def test_a_cancel_the_worker_recorded_first_is_a_cancel_not_a_conflict(
    production: tuple[JobsClient, Settings],
) -> None:
    """The worker that hears the announcement may record the run cancelled before the
    cancel's own write lands. The row is held locked until the announcement is out, and
    the worker's write is committed first: the cancel still succeeds (it was a 409)."""
    client, settings = production
    run_id = await client.enqueue("count_items", {"items": ["a"]})
    engine = client._database.engine
    async with engine.begin() as connection:  # a worker started attempt 1
        await connection.execute(
            update(JobRun).where(JobRun.run_id == run_id).values(status="running", attempt=1)
        )
    async with engine.connect() as worker:
        locked = await worker.begin()
        await worker.execute(select(JobRun.id).where(JobRun.run_id == run_id).with_for_update())
        cancelling = asyncio.create_task(client.cancel(run_id, by="operator"))
        pool = ConnectionPool.from_url(redis_url())
        try:
            for _ in range(1000):  # until the cancel has announced it (10 s at most)
                if await read_cancellation(pool, settings.redis_prefix, run_id) is not None:
                    break
                await asyncio.sleep(0.01)
        finally:
            await pool.aclose()
        await worker.execute(
            update(JobRun)
            .where(JobRun.run_id == run_id)
            .values(
                status="cancelled",
                error={"type": "Cancelled", "message": "cancelled by operator"},
            )
        )
        await locked.commit()
    cancelled = await asyncio.wait_for(cancelling, 10)
    assert (cancelled.status, cancelled.attempt) == ("cancelled", 1)


async def test_of_concurrent_cancels_by_different_operators_one_succeeds(
    production: tuple[JobsClient, Settings],
) -> None:
    """Ten operators cancel one run at once: one cancel happened, the nine others find
    it cancelled by someone else (409), as they would a moment later. All ten used to
    succeed, each told it had cancelled the run."""
    client, _ = production
    run_id = await client.enqueue("count_items", {"items": ["a"]})
    outcomes = await asyncio.gather(
        *(client.cancel(run_id, by=f"operator-{n}") for n in range(10)), return_exceptions=True
    )
    succeeded = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, RunStateError)]
    assert len(succeeded) == 1
    assert len(refused) == 9
    [winner] = succeeded
    assert winner.status == "cancelled"
    assert winner.error is not None
    assert winner.error["message"].startswith("cancelled by operator-")
