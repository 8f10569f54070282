"""What the benchmark tasks do, written once for every contestant.

Plain TaskIQ (:mod:`benchmarks.plain_taskiq_app`) and Jobs Service
(:mod:`benchmarks.tasks`) wrap these same coroutines in their own task declarations, so
the contestants differ only in the service around the work. Each does its observable
effect with one Redis command on a key the harness names, through one connection pool
per worker process.
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

__all__ = ["bump_counter", "record_latency", "redis", "sleep_then_count"]

_clients: dict[str, Redis] = {}


def redis(url: str) -> Redis:
    """One connection pool per process and URL, created in the worker's event loop."""
    if url not in _clients:
        _clients[url] = Redis.from_url(url)
    return _clients[url]


async def bump_counter(client: Redis, key: str) -> None:
    """W1: one ``INCR``, so completion is observable the same way for everyone."""
    await client.incr(key)


async def record_latency(client: Redis, key: str, sent_at: float) -> None:
    """W2: append how long ago the producer sent this run (seconds, wall clock).

    The clock is read first thing in the task body: what follows is not latency.
    """
    waited = time.time() - sent_at
    await client.rpush(key, repr(waited))


async def sleep_then_count(client: Redis, key: str, seconds: float) -> None:
    """W3: hold a concurrency slot for ``seconds`` without CPU, then ``INCR``."""
    await asyncio.sleep(seconds)
    await client.incr(key)
