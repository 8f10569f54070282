"""A message is acknowledged only once its run's outcome is in the database, on the
real Redis stream and PostgreSQL: a worker dying in between leaves the message to be
run again, never a run whose outcome existed only in the dead worker's memory."""

from __future__ import annotations

import asyncio
import uuid
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
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.anyio


async def count_invoices() -> Summary:
    """A run that ends at once."""
    return make_summary(processed=1)


async def _until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 15) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 - polls Redis and the database
            await asyncio.sleep(0.05)


async def test_a_message_waits_for_its_runs_record_before_it_is_acknowledged(
    empty_pg_url: str, redis_prefix: str
) -> None:
    """While the database holds the recorder's write (a lock here; a slow or lost
    database alike), the finished run's message stays pending; once the outcome is
    written, it is acknowledged."""
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
        broker.state.runtime = runtime
        await broker.startup()
    run_id = await JobsClient(producer, runtime).enqueue("count_invoices", {})

    async def pending() -> int:
        async with Redis.from_url(redis_url()) as redis:
            info = await redis.xpending(worker.queue_name, worker.consumer_group_name)
        return int(info["pending"])

    locker = await asyncpg.connect(empty_pg_url.replace("postgresql+asyncpg", "postgresql"))
    receiver = JobsReceiver(worker, max_async_tasks=4, max_prefetch=2)
    finish = asyncio.Event()
    listening: asyncio.Task[None] | None = None
    try:
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE job_runs IN ACCESS EXCLUSIVE MODE")
        listening = asyncio.create_task(receiver.listen(finish))

        async def finished_and_held_back() -> bool:
            return worker.completions.held_back == 1

        await _until(finished_and_held_back)
        await asyncio.sleep(0.3)  # many flush intervals and acknowledgement windows
        assert await pending() == 1
        assert worker.completions.held_back == 1

        await lock.rollback()

        async def acknowledged() -> bool:
            return await pending() == 0

        await _until(acknowledged)
        async with runtime.database.sessions() as session:
            row = await runs.get_run(session, run_id=run_id)
        assert row is not None
        assert (row.status, row.summary) == ("succeeded", {"processed": 1, "errors": 0})
        assert worker.completions.held_back == 0
    finally:
        finish.set()
        if listening is not None:
            await asyncio.wait_for(listening, 15)
        await locker.close()
        for broker in (producer, worker):
            await broker.shutdown()
        await runtime.stop()
