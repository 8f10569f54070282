"""Finished messages share one pipelined round trip: results stored, then acknowledged."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import ConnectionPool, Redis

from jobs_service.infrastructure.completions import Completions
from tests.support.services import redis_url

pytestmark = pytest.mark.anyio


async def _stream_with(redis: Redis, stream: str, group: str, count: int) -> list[str]:
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    for index in range(count):
        await redis.xadd(stream, {b"data": str(index).encode()})
    read = await redis.xreadgroup(group, "c1", {stream: ">"}, count=count)
    return [message_id.decode() for message_id, _ in read[0][1]]


async def test_fifty_completions_take_one_round_trip_and_store_every_result(
    redis_prefix: str,
) -> None:
    stream, group = f"{redis_prefix}-{uuid.uuid4().hex[:6]}:done", "workers"
    pool = ConnectionPool.from_url(redis_url())
    settled: list[str] = []
    async with Redis(connection_pool=pool) as redis:
        ids = await _stream_with(redis, stream, group, 50)
        completions = Completions(pool, group, on_settled=settled.append)
        for index, message_id in enumerate(ids):
            completions.complete(stream, message_id, (f"{stream}:r:{index}", b"ok", 60))
        assert await completions.drain(timeout_s=5)
        pending = await redis.xpending(stream, group)
        stored = await redis.mget([f"{stream}:r:{index}" for index in range(50)])
        ttl = await redis.ttl(f"{stream}:r:7")
        await redis.delete(stream, *[f"{stream}:r:{index}" for index in range(50)])
        await completions.aclose()
    await pool.aclose()
    assert pending["pending"] == 0
    assert stored == [b"ok"] * 50
    assert 0 < ttl <= 60
    assert completions.round_trips == 1
    assert sorted(settled) == sorted(ids)


async def test_a_waiting_completion_returns_once_redis_confirmed_it(redis_prefix: str) -> None:
    stream, group = f"{redis_prefix}-{uuid.uuid4().hex[:6]}:wait", "workers"
    pool = ConnectionPool.from_url(redis_url())
    async with Redis(connection_pool=pool) as redis:
        [message_id] = await _stream_with(redis, stream, group, 1)
        completions = Completions(pool, group, on_settled=lambda _: None)
        await completions.complete_and_wait(stream, message_id)
        pending = await redis.xpending(stream, group)
        await redis.delete(stream)
        await completions.aclose()
    await pool.aclose()
    assert pending["pending"] == 0


async def test_a_refused_batch_fails_its_waiters_and_releases_its_messages(
    redis_prefix: str,
) -> None:
    key = f"{redis_prefix}-{uuid.uuid4().hex[:6]}:not-a-stream"
    pool = ConnectionPool.from_url(redis_url())
    settled: list[str] = []
    async with Redis(connection_pool=pool) as redis:
        await redis.set(key, "plain string")  # XACK on it is refused (WRONGTYPE)
        completions = Completions(pool, "workers", on_settled=settled.append)
        outcome = await asyncio.gather(
            *(completions.complete_and_wait(key, f"1-{index}") for index in range(3)),
            return_exceptions=True,
        )
        await redis.delete(key)
        await completions.aclose()
    await pool.aclose()
    assert all(isinstance(result, Exception) for result in outcome)
    assert sorted(settled) == ["1-0", "1-1", "1-2"]


async def test_an_unreachable_redis_keeps_retrying_until_the_drain_gives_up() -> None:
    pool = ConnectionPool.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    settled: list[str] = []
    completions = Completions(pool, "workers", on_settled=settled.append)
    completions.complete("s", "1-0")
    drained = await completions.drain(timeout_s=0.5)
    await completions.aclose()
    await pool.aclose()
    assert drained is False
    assert completions.round_trips == 0
    assert settled == ["1-0"]  # given up at the drain: released, so it is re-delivered


@pytest.mark.parametrize(("more_coming", "round_trips"), [(True, 1), (False, 2)])
async def test_a_batch_waits_longer_for_company_while_more_messages_are_coming(
    redis_prefix: str, more_coming: bool, round_trips: int
) -> None:
    """Two messages finished 0.1 s apart: while more are coming the first waits for the
    second (a long window here), otherwise its short window has ended and it went alone."""
    stream, group = f"{redis_prefix}-{uuid.uuid4().hex[:6]}:company", "workers"
    pool = ConnectionPool.from_url(redis_url())
    async with Redis(connection_pool=pool) as redis:
        first, second = await _stream_with(redis, stream, group, 2)
        completions = Completions(
            pool, group, on_settled=lambda _: None, window_s=0.001, busy_window_s=30
        )
        completions.more_coming = lambda: more_coming
        completions.complete(stream, first)
        await asyncio.sleep(0.1)  # timers fire in order: the 1 ms window ends first
        completions.complete(stream, second)
        assert await completions.drain(timeout_s=5)
        pending = await redis.xpending(stream, group)
        await redis.delete(stream)
        await completions.aclose()
    await pool.aclose()
    assert pending["pending"] == 0
    assert completions.round_trips == round_trips
