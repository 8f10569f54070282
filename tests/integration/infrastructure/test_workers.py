"""Heartbeats tell live workers from dead ones; runs left on dead ones are failed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from taskiq import Context, TaskiqMessage

from jobs_service.broker import build_broker
from jobs_service.core.ids import new_run_id
from jobs_service.core.settings import DatabaseSettings, Settings
from jobs_service.core.summary import Summary
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.pending_runs import pending_runs
from jobs_service.infrastructure.redis_broker import StreamBroker
from jobs_service.infrastructure.repositories import runs
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.infrastructure.stream_upkeep import StreamUpkeep, last_seen_key
from jobs_service.infrastructure.workers import LAST_SEEN_KEPT, live_workers, prune_last_seen
from jobs_service.tasks.maintenance import recover_orphaned_runs
from tests.support.services import redis_url

pytestmark = pytest.mark.anyio


async def test_a_heartbeat_makes_a_worker_live_and_stopping_withdraws_it(
    redis_prefix: str,
) -> None:
    prefix = f"{redis_prefix}-{uuid.uuid4().hex[:6]}"
    broker = build_broker(Settings(redis_url=redis_url(), redis_prefix=prefix))
    assert isinstance(broker, StreamBroker)
    await broker.startup()
    upkeep = StreamUpkeep(broker, prefix=prefix, max_lease_s=3600)
    try:
        assert await live_workers(broker, prefix) == []
        await upkeep.beat()
        [worker] = await live_workers(broker, prefix) or []
        assert worker.consumer == broker.consumer_name
        assert worker.held == 0
        assert worker.names == (broker.consumer_name,)  # not host:pid, as releases before
        async with Redis(connection_pool=broker.connection_pool) as redis:
            await redis.hset(last_seen_key(prefix), "long-gone:1:0badf00d", 1.0)
        seen = await prune_last_seen(broker, prefix, before=datetime.now(UTC) - LAST_SEEN_KEPT)
        assert list(seen) == [broker.consumer_name]
        async with Redis(connection_pool=broker.connection_pool) as redis:
            assert await redis.hkeys(last_seen_key(prefix)) == [broker.consumer_name.encode()]
        await upkeep.stop()
        assert await live_workers(broker, prefix) == []
    finally:
        await broker.shutdown()


async def test_runs_on_dead_workers_are_failed_and_the_others_left_alone(pg_url: str) -> None:
    database = Database(pg_url, DatabaseSettings())
    now = datetime.now(UTC)
    long_ago = now - timedelta(minutes=10)
    events = {
        "ghost": runs.RunEvent(
            new_run_id(), "t", {}, "api", "running", 1, "gone:1", long_ago, long_ago
        ),
        "alive": runs.RunEvent(
            new_run_id(), "t", {}, "api", "running", 1, "here:2", long_ago, long_ago
        ),
        "young": runs.RunEvent(new_run_id(), "t", {}, "api", "running", 1, "gone:1", now, now),
    }
    try:
        async with database.engine.begin() as connection:
            await runs.upsert_run_events(connection, list(events.values()))
            candidates = await runs.workers_of_old_runs(
                connection, started_before=now - timedelta(minutes=2)
            )
            failed = await runs.fail_orphaned(
                connection,
                dead_workers=["gone:1"],
                started_before=now - timedelta(minutes=2),
                error={"type": "WorkerLost", "message": "gone"},
                now=now,
            )
        async with database.sessions() as session:
            statuses = {
                name: (await runs.get_run(session, run_id=event.run_id)).status  # type: ignore[union-attr]
                for name, event in events.items()
            }
    finally:
        await database.close()
    assert {"gone:1", "here:2"} <= set(candidates)
    assert failed == [events["ghost"].run_id]
    assert statuses == {"ghost": "failed", "alive": "running", "young": "running"}


async def test_a_dead_workers_run_whose_message_is_still_pending_is_not_failed(
    pg_url: str, redis_prefix: str
) -> None:
    """A run left ``running`` by a dead worker whose message is still pending (waiting
    for a reclaim, or reclaimed and waiting for a slot) will run again: the recovery
    leaves it alone, and fails it only once the message is gone. The run's entry sits
    behind 600 others, past the first page of the pending list."""
    prefix = f"{redis_prefix}-{uuid.uuid4().hex[:6]}"
    settings = Settings(database_url=pg_url, redis_url=redis_url(), redis_prefix=prefix)
    runtime = Runtime(settings)
    await runtime.start()
    broker = build_broker(settings)
    assert isinstance(broker, StreamBroker)
    broker.state.runtime = runtime
    broker.name_this_process()  # as a worker process does
    await broker.startup()
    upkeep = StreamUpkeep(broker, prefix=prefix, max_lease_s=3600)
    dead = "gone-host:1:0badf00d"
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    waiting, lost = new_run_id(), new_run_id()
    stream, group = broker.queue_name, broker.consumer_group_name

    def message(run_id: str) -> bytes:
        taskiq = TaskiqMessage(task_id=run_id, task_name="t", labels={}, args=[], kwargs={})
        return broker.formatter.dumps(taskiq).message

    async def recover() -> tuple[Summary, dict[str, str]]:
        context = Context(
            TaskiqMessage(task_id="x", task_name="t", labels={}, args=[], kwargs={}), broker
        )
        summary = await recover_orphaned_runs.original_func(current=runtime, context=context)
        async with runtime.database.sessions() as session:
            rows = {
                run_id: await runs.get_run(session, run_id=run_id) for run_id in (waiting, lost)
            }
        return summary, {run_id: row.status for run_id, row in rows.items() if row is not None}

    try:
        await upkeep.beat()  # this worker is alive, so the recovery judges others
        async with Redis(connection_pool=broker.connection_pool) as redis:
            filler = redis.pipeline(transaction=False)
            for _ in range(600):
                filler.xadd(stream, {b"data": message(new_run_id())})
            await filler.execute()
            waiting_id = await redis.xadd(stream, {b"data": message(waiting)})
            await redis.xreadgroup(group, dead, {stream: ">"}, count=1000)
        async with runtime.database.engine.begin() as connection:
            await runs.upsert_run_events(
                connection,
                [
                    runs.RunEvent(run_id, "t", {}, "api", "running", 1, dead, long_ago, long_ago)
                    for run_id in (waiting, lost)
                ],
            )
        # (The database is the session's: other tests' runs may be recovered too.)
        summary, statuses = await recover()
        assert statuses == {waiting: "running", lost: "failed"}, summary

        async with Redis(connection_pool=broker.connection_pool) as redis:
            await redis.xack(stream, group, waiting_id)
        summary, statuses = await recover()
        assert statuses == {waiting: "failed", lost: "failed"}, summary
    finally:
        await upkeep.stop()
        await broker.shutdown()
        await runtime.stop()


async def test_the_pending_list_is_read_whole_or_not_at_all(
    redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No stream or group yet: nothing is pending. An error on a later page raises: a
    run on a page never read must not pass for one whose message is gone."""
    prefix = f"{redis_prefix}-{uuid.uuid4().hex[:6]}"
    broker = build_broker(Settings(redis_url=redis_url(), redis_prefix=prefix))
    assert isinstance(broker, StreamBroker)
    try:
        assert await pending_runs(broker, ["a" * 32]) == set()  # no group: NOGROUP
        await broker.startup()
        async with Redis(connection_pool=broker.connection_pool) as redis:
            adds = redis.pipeline(transaction=False)
            for _ in range(501):
                adds.xadd(broker.queue_name, {b"data": b"{}"})
            await adds.execute()
            await redis.xreadgroup(
                broker.consumer_group_name, "gone", {broker.queue_name: ">"}, count=1000
            )
        pages = iter([False, True])
        xpending_range = Redis.xpending_range

        async def fails_on_page_two(self: Redis, *args: Any, **kwargs: Any) -> Any:
            if next(pages, False):
                raise ResponseError("LOADING Redis is loading the dataset in memory")
            return await xpending_range(self, *args, **kwargs)

        monkeypatch.setattr(Redis, "xpending_range", fails_on_page_two)
        with pytest.raises(ResponseError, match="LOADING"):
            await pending_runs(broker, ["a" * 32])
    finally:
        await broker.shutdown()
