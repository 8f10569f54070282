"""The W1 baseline: plain TaskIQ, ``RedisStreamBroker`` with its defaults.

Only the key names are set (a stream and a consumer group under
``W1_TASKIQ_PREFIX``, so a run never meets another one's messages); everything else
(``xread_count``, block time, acknowledgement, serializer, no result backend) is
TaskIQ's default. Started by ``benchmarks.w1_baseline`` as

    taskiq worker benchmarks.plain_taskiq_app:broker --workers 1
"""

from __future__ import annotations

import os

from redis.asyncio import Redis
from taskiq_redis import RedisStreamBroker

REDIS_URL = os.environ.get("W1_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("W1_TASKIQ_PREFIX", "w1-taskiq")

broker = RedisStreamBroker(
    url=REDIS_URL,
    queue_name=f"{PREFIX}:stream",
    consumer_group_name=f"{PREFIX}:group",
)

_redis: Redis | None = None


def _client() -> Redis:
    """One connection pool per process, created in the worker's event loop."""
    global _redis  # noqa: PLW0603 - a lazily built per-process client
    if _redis is None:
        _redis = Redis.from_url(REDIS_URL)
    return _redis


@broker.task(task_name="bump_counter")
async def bump_counter(key: str) -> None:
    """One Redis INCR, so completion is observable the same way for every contestant."""
    await _client().incr(key)
