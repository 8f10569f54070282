"""A retry scheduled while Redis restarts, against a Redis server of the test's own."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import anyio
import orjson
import pytest
from redis.asyncio import Redis
from taskiq import TaskiqMessage, TaskiqResult

from jobs_service.broker import build_broker
from jobs_service.core.errors import RetryLater
from jobs_service.core.run_context import clear_run, set_run
from jobs_service.infrastructure.delayed import delayed_key
from jobs_service.infrastructure.redis_broker import StreamBroker
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.middlewares.retry import RetryMiddleware
from tests.support.redis_server import PrivateRedis
from tests.support.run_events import run_in_progress

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio


async def test_a_retry_sent_while_redis_restarts_is_scheduled_once_it_is_back(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """The send of the next attempt waits for Redis (the failed attempt's message is
    still held) instead of giving up: that used to end a retryable run ``failed``."""
    server = PrivateRedis(tmp_path, durable=True)
    server.start()
    settings = make_settings(
        redis_url=server.url,
        redis_prefix=f"retry-outage-{uuid.uuid4().hex[:6]}",
        worker={"retry_backoff_s": 0.02, "retry_backoff_max_s": 0.1},
    )
    worker = build_broker(settings)
    assert isinstance(worker, StreamBroker)
    runtime = Runtime(settings)
    worker.state.runtime = runtime
    middleware = RetryMiddleware()
    middleware.set_broker(worker)
    message = TaskiqMessage(
        task_id="run-outage",
        task_name="sync_accounts",
        labels={"retry_on_error": True, "max_retries": 3},
        labels_types={},
        args=[],
        kwargs={},
    )
    run = run_in_progress("run-outage", task="sync_accounts")
    failed = TaskiqResult(
        is_err=True, return_value=None, execution_time=0.01, error=RetryLater("busy")
    )
    try:
        server.stop()
        set_run(run)
        sending = middleware.post_execute(message, failed)
        assert sending is not None
        async with anyio.create_task_group() as group:

            async def restart_soon() -> None:
                await anyio.sleep(1.0)
                server.start()

            group.start_soon(restart_soon)
            with anyio.fail_after(15):
                await sending
        async with Redis.from_url(server.url) as redis:
            scheduled = await redis.zrange(delayed_key(worker), 0, -1)
    finally:
        clear_run()
        server.stop()
        await worker.shutdown()
        await runtime.stop()
    assert run.retry_in_s is not None
    [retry] = [orjson.loads(raw) for raw in scheduled]
    assert (retry["task_id"], retry["labels"]["attempt"]) == ("run-outage", "2")
