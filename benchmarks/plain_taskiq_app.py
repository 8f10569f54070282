"""The in-run baseline: plain TaskIQ, ``RedisStreamBroker`` with its defaults.

Only the key names are set (a stream and a consumer group under
``TASKIQ_BENCH_PREFIX``, so a run never meets another one's messages); everything else
(``xread_count``, block time, acknowledgement, serializer, no result backend) is
TaskIQ's default. The tasks do exactly what the Jobs Service ones in
:mod:`benchmarks.tasks` do (:mod:`benchmarks.task_bodies`). Started by the W1-W3
benchmarks as

    taskiq worker benchmarks.plain_taskiq_app:broker --workers 1
"""

from __future__ import annotations

import os

from taskiq_redis import RedisStreamBroker

from benchmarks import task_bodies

REDIS_URL = os.environ.get("TASKIQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("TASKIQ_BENCH_PREFIX", "bench-taskiq")

broker = RedisStreamBroker(
    url=REDIS_URL,
    queue_name=f"{PREFIX}:stream",
    consumer_group_name=f"{PREFIX}:group",
)


@broker.task(task_name="bump_counter")
async def bump_counter(key: str) -> None:
    """One Redis INCR (W1)."""
    await task_bodies.bump_counter(task_bodies.redis(REDIS_URL), key)


@broker.task(task_name="record_latency")
async def record_latency(key: str, sent_at: float) -> None:
    """Append the enqueue-to-start latency (W2)."""
    await task_bodies.record_latency(task_bodies.redis(REDIS_URL), key, sent_at)


@broker.task(task_name="sleep_then_count")
async def sleep_then_count(key: str, seconds: float = 0.05) -> None:
    """Sleep, then one Redis INCR (W3)."""
    await task_bodies.sleep_then_count(task_bodies.redis(REDIS_URL), key, seconds)
