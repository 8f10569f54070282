"""A run to deliver succeeds while the database is down: its delivery is queued all
the same, on the real Redis stream."""

from __future__ import annotations

import uuid

import orjson
import pytest
from redis.asyncio import Redis
from taskiq import TaskiqMessage, TaskiqResult

from jobs_service.broker import broker as shared
from jobs_service.broker import build_broker, stream_names
from jobs_service.core.run_context import clear_run, set_run
from jobs_service.core.settings import Settings
from jobs_service.core.summary import make_summary
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.middlewares.result_delivery import DELIVER_TASK, ResultDeliveryMiddleware
from jobs_service.tasks.registry import list_tasks
from tests.support.run_events import run_in_progress
from tests.support.services import redis_url

pytestmark = pytest.mark.anyio


async def test_a_delivery_is_queued_while_the_database_is_down(redis_prefix: str) -> None:
    """The follow-up's idempotency key cannot be claimed without the database; the
    follow-up is queued without it (sending twice is prevented by the delivery's own
    records), instead of the result never being delivered."""
    settings = Settings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/nowhere",
        redis_url=redis_url(),
        redis_prefix=f"{redis_prefix}-deliver-{uuid.uuid4().hex[:6]}",
    )
    worker = build_broker(settings)
    info = next(info for info in list_tasks(shared) if info.name == DELIVER_TASK)
    worker.register_task(info.task.original_func, info.name)
    runtime = Runtime(settings)
    worker.state.runtime = runtime
    await worker.startup()
    middleware = ResultDeliveryMiddleware()
    middleware.set_broker(worker)
    run = run_in_progress(task="count_items", deliver_to={"teams_channel": "ops"})
    message = TaskiqMessage(
        task_id=run.run_id, task_name="count_items", labels={}, labels_types={}, args=[], kwargs={}
    )
    succeeded = TaskiqResult(
        is_err=False, return_value=make_summary(processed=1), execution_time=0.01
    )
    try:
        set_run(run)
        queueing = middleware.post_execute(message, succeeded)
        assert queueing is not None
        await queueing
        async with Redis.from_url(redis_url()) as redis:
            entries = await redis.xrange(stream_names(settings)["stream"])
    finally:
        clear_run()
        await worker.shutdown()
        await runtime.stop()
    sent = [orjson.loads(fields[b"data"]) for _, fields in entries]
    assert [(m["task_name"], m["kwargs"]) for m in sent] == [(DELIVER_TASK, {"run_id": run.run_id})]
