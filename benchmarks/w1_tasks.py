"""The W1 task for Jobs Service (loaded with ``JOBS_TASK_MODULES=benchmarks.w1_tasks``).

The same work as the plain TaskIQ baseline (:mod:`benchmarks.plain_taskiq_app`): one
Redis ``INCR`` on the counter key it is given, through a per-process client built from
``JOBS_REDIS_URL``.
"""

from __future__ import annotations

import os

from redis.asyncio import Redis

from jobs_service.broker import broker
from jobs_service.core.summary import Summary, make_summary

_redis: Redis | None = None


def _client() -> Redis:
    """One connection pool per process, created in the worker's event loop."""
    global _redis  # noqa: PLW0603 - a lazily built per-process client
    if _redis is None:
        _redis = Redis.from_url(os.environ.get("JOBS_REDIS_URL", "redis://127.0.0.1:6379/0"))
    return _redis


@broker.task(task_name="bump_counter", category="benchmark")
async def bump_counter(key: str) -> Summary:
    """One Redis INCR on ``key``: the W1 no-op whose completion can be counted."""
    await _client().incr(key)
    return make_summary(processed=1)
