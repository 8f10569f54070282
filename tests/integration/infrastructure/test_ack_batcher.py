"""Acks requested together share one pipelined XACK; each still waits for its own."""

from __future__ import annotations

import uuid

import anyio
import pytest
from redis.asyncio import ConnectionPool, Redis

from jobs_service.infrastructure.ack_batcher import AckBatcher
from tests.support.services import redis_url

pytestmark = pytest.mark.anyio


async def test_fifty_acks_at_once_take_one_round_trip_and_all_land(redis_prefix: str) -> None:
    stream, group = f"{redis_prefix}-{uuid.uuid4().hex[:6]}:acks", "workers"
    pool = ConnectionPool.from_url(redis_url())
    async with Redis(connection_pool=pool) as redis:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
        for index in range(50):
            await redis.xadd(stream, {b"data": str(index).encode()})
        read = await redis.xreadgroup(group, "c1", {stream: ">"}, count=50)
        ids = [message_id.decode() for message_id, _ in read[0][1]]
        batcher = AckBatcher(pool, group)
        async with anyio.create_task_group() as tasks:
            for message_id in ids:
                tasks.start_soon(batcher.ack, stream, message_id)
        pending = await redis.xpending(stream, group)
        await redis.delete(stream)
    await pool.aclose()
    assert pending["pending"] == 0
    assert batcher.round_trips == 1


async def test_a_failed_flush_fails_every_ack_in_it() -> None:
    pool = ConnectionPool.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=1)
    batcher = AckBatcher(pool, "workers")
    failures: list[BaseException] = []

    async def ack(message_id: str) -> None:
        try:
            await batcher.ack("s", message_id)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            failures.append(exc)

    async with anyio.create_task_group() as tasks:
        for index in range(5):
            tasks.start_soon(ack, f"1-{index}")
    await pool.aclose()
    assert len(failures) == 5
    assert batcher.round_trips == 0
