"""A producer client on a Redis and a database of the test's choosing."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from jobs_service.broker import broker as shared
from jobs_service.broker import build_broker
from jobs_service.client import JobsClient
from jobs_service.core.settings import Settings
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.tasks.registry import list_tasks

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["client_for"]


@contextlib.asynccontextmanager
async def client_for(
    pg_url: str, redis_url: str, prefix: str, *, settings: Settings | None = None
) -> AsyncIterator[JobsClient]:
    """A client on its own Redis (key prefix) and the shared test database."""
    settings = settings or Settings(database_url=pg_url, redis_url=redis_url, redis_prefix=prefix)
    broker = build_broker(settings)
    for info in list_tasks(shared):
        broker.register_task(info.task.original_func, info.name, **info.task.labels)
    runtime = Runtime(settings)
    broker.state.runtime = runtime
    try:
        yield JobsClient(broker, runtime)
    finally:
        await broker.shutdown()
        await runtime.stop()
