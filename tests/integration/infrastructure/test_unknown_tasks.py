"""A task some workers do not know yet (a rolling deploy), on the real Redis stream and
PostgreSQL: its message waits for a worker that knows it, and its run ends ``dead``
when no worker that took it did."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from taskiq.receiver import Receiver

from jobs_service.broker import build_broker
from jobs_service.client import JobsClient
from jobs_service.core.settings import Settings
from jobs_service.core.summary import Summary, make_summary
from jobs_service.infrastructure.receiver import JobsReceiver
from jobs_service.infrastructure.redis_broker import MAX_DELIVERIES, StreamBroker
from jobs_service.infrastructure.repositories import runs
from jobs_service.infrastructure.runtime import Runtime
from tests.support.services import redis_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from jobs_service.infrastructure.models import JobRun

pytestmark = pytest.mark.anyio

NEW_TASK = "publish_release_notes"


async def publish_release_notes(version: str) -> Summary:
    """The task only the new release's workers have."""
    del version
    return make_summary(processed=1)


@dataclass
class Deploy:
    """One Redis stream and database seen by a gateway that knows ``NEW_TASK`` and by
    workers of either release."""

    settings: Settings
    runtime: Runtime
    client: JobsClient
    brokers: list[StreamBroker]

    def worker(self, *, knows_new_task: bool) -> StreamBroker:
        worker = build_broker(self.settings)
        assert isinstance(worker, StreamBroker)
        if knows_new_task:
            worker.register_task(publish_release_notes, NEW_TASK)
        worker.state.runtime = self.runtime
        self.brokers.append(worker)
        return worker

    async def pending(self) -> list[tuple[str, int]]:
        """(message id, times delivered) of every unacknowledged message."""
        stream = self.brokers[0].queue_name
        group = self.brokers[0].consumer_group_name
        async with Redis.from_url(redis_url()) as redis:
            rows = await redis.xpending_range(stream, group, min="-", max="+", count=100)
        return [(row["message_id"].decode(), int(row["times_delivered"])) for row in rows]

    async def run(self, run_id: str) -> JobRun:
        await self.runtime.recorder.wait_flushed()
        async with self.runtime.database.sessions() as session:
            row = await runs.get_run(session, run_id=run_id)
        assert row is not None
        return row


@pytest.fixture
async def deploy(pg_url: str, redis_prefix: str) -> AsyncIterator[Deploy]:
    settings = Settings(
        database_url=pg_url,
        redis_url=redis_url(),
        redis_prefix=f"{redis_prefix}-unknown-{uuid.uuid4().hex[:6]}",
        broker={"idle_timeout_s": 1, "reclaim_interval_s": 0.2, "xread_block_ms": 100},
    )
    runtime = Runtime(settings)
    await runtime.start()
    made = Deploy(settings, runtime, JobsClient(build_broker(settings), runtime), [])
    gateway = made.client.broker
    assert isinstance(gateway, StreamBroker)
    gateway.register_task(publish_release_notes, NEW_TASK)
    gateway.state.runtime = runtime
    made.brokers.append(gateway)
    await gateway.startup()
    yield made
    for broker in made.brokers:
        await broker.shutdown()
    await runtime.stop()


async def _until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 15) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 - polls Redis and the database
            await asyncio.sleep(0.05)


async def _receive(receiver: Receiver, until: Callable[[], Awaitable[bool]]) -> None:
    """Run ``receiver`` until ``until`` holds, then stop it as SIGTERM would."""
    finish = asyncio.Event()
    listening = asyncio.create_task(receiver.listen(finish))
    try:
        await _until(until)
    finally:
        finish.set()
        await asyncio.wait_for(listening, 15)


async def test_a_worker_without_the_task_leaves_it_for_one_that_has_it(deploy: Deploy) -> None:
    """The older worker neither runs nor acknowledges the message and stops renewing it;
    a worker of the new release reclaims it after the idle timeout and runs it."""
    run_id = await deploy.client.enqueue(NEW_TASK, {"version": "2.0"})
    old = deploy.worker(knows_new_task=False)

    async def taken_by_old() -> bool:
        return [d for _, d in await deploy.pending()] == [1] and not old.held

    await _receive(JobsReceiver(old, max_async_tasks=2), taken_by_old)
    assert (await deploy.run(run_id)).status == "queued"

    new = deploy.worker(knows_new_task=True)

    async def run_by_new() -> bool:
        return (await deploy.run(run_id)).status == "succeeded" and not await deploy.pending()

    await _receive(JobsReceiver(new, max_async_tasks=2), run_by_new)
    assert (await deploy.run(run_id)).summary == {"processed": 1, "errors": 0}


async def test_a_task_no_worker_knows_ends_dead_at_its_last_delivery(deploy: Deploy) -> None:
    """Delivered ``MAX_DELIVERIES`` times to workers without the task, the run is
    recorded dead with the reason and its message acknowledged: nothing loops."""
    run_id = await deploy.client.enqueue(NEW_TASK, {"version": "2.0"})
    old = deploy.worker(knows_new_task=False)
    await _given_delivered(deploy, times=MAX_DELIVERIES - 1)
    dead_before = _dead_count(NEW_TASK)

    async def settled() -> bool:
        return not await deploy.pending() and (await deploy.run(run_id)).status == "dead"

    await _receive(JobsReceiver(old, max_async_tasks=2), settled)
    assert _dead_count(NEW_TASK) == dead_before + 1  # jobs_dead_runs_total sees it too
    run = await deploy.run(run_id)
    assert run.error == {
        "type": "UnknownTask",
        "message": f"unknown task '{NEW_TASK}' on every worker that took it "
        f"({MAX_DELIVERIES} deliveries)",
    }
    assert run.finished_at is not None
    async with Redis.from_url(redis_url()) as redis:
        assert await redis.xlen(f"{old.queue_name}:dead") == 0


async def test_a_message_that_never_finishes_anywhere_ends_its_run_dead(deploy: Deploy) -> None:
    """A message delivered ``MAX_DELIVERIES`` times without finishing (it crashed every
    worker that took it) goes to the dead-letter stream, and its run is recorded dead
    there and then: nothing else would ever end it."""
    run_id = await deploy.client.enqueue(NEW_TASK, {"version": "2.0"})
    worker = deploy.worker(knows_new_task=True)
    await _given_delivered(deploy, times=MAX_DELIVERIES)
    dead_before = _dead_count(NEW_TASK)

    async def settled() -> bool:
        return not await deploy.pending() and (await deploy.run(run_id)).status == "dead"

    await _receive(JobsReceiver(worker, max_async_tasks=2), settled)
    run = await deploy.run(run_id)
    assert run.error is not None
    assert run.error["type"] == "PoisonMessage"
    assert f"delivered {MAX_DELIVERIES + 1} times" in run.error["message"]
    assert _dead_count(NEW_TASK) == dead_before + 1
    async with Redis.from_url(redis_url()) as redis:
        assert await redis.xlen(f"{worker.queue_name}:dead") == 1


async def test_taskiqs_own_receiver_leaves_an_unknown_task_pending_too(deploy: Deploy) -> None:
    """``taskiq worker`` without Jobs Service's receiver: the broker keeps the message of
    an unknown task from TaskIQ's receiver, which would acknowledge and drop it."""
    run_id = await deploy.client.enqueue(NEW_TASK, {"version": "2.0"})
    old = deploy.worker(knows_new_task=False)

    async def taken_by_old() -> bool:
        return [d for _, d in await deploy.pending()] == [1] and not old.held

    await _receive(Receiver(old, max_async_tasks=2), taken_by_old)
    assert (await deploy.run(run_id)).status == "queued"

    await _given_delivered(deploy, times=MAX_DELIVERIES - 1)

    async def settled() -> bool:
        return not await deploy.pending() and (await deploy.run(run_id)).status == "dead"

    await _receive(Receiver(old, max_async_tasks=2), settled)


def _dead_count(task: str) -> float:
    return REGISTRY.get_sample_value("jobs_dead_runs_total", {"task": task}) or 0.0


async def _given_delivered(deploy: Deploy, *, times: int) -> None:
    """Make the one message look delivered ``times`` times to workers since gone (its
    lease long lapsed), as if older workers had passed it round."""
    broker = deploy.brokers[0]
    async with Redis.from_url(redis_url()) as redis:
        if not await deploy.pending():
            await redis.xreadgroup(
                broker.consumer_group_name, "gone-worker", {broker.queue_name: ">"}, count=1
            )
        [(message_id, _)] = await deploy.pending()
        await redis.xclaim(
            broker.queue_name,
            broker.consumer_group_name,
            "gone-worker",
            min_idle_time=0,
            message_ids=[message_id],
            idle=60_000,
            retrycount=times,
        )
