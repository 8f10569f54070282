"""Delayed sends on Redis: held in a sorted set, moved to the stream once when due."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import anyio
import pytest
from redis.asyncio import Redis
from taskiq.message import BrokerMessage

from jobs_service.broker import build_broker
from jobs_service.core.settings import Settings
from jobs_service.infrastructure.delayed import DelayedMover, delayed_key, send_later
from jobs_service.infrastructure.redis_broker import StreamBroker
from tests.support.services import redis_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


@pytest.fixture
async def stream_broker(redis_prefix: str) -> AsyncIterator[StreamBroker]:
    settings = Settings(
        redis_url=redis_url(), redis_prefix=f"{redis_prefix}-{uuid.uuid4().hex[:6]}"
    )
    broker = build_broker(settings)
    assert isinstance(broker, StreamBroker)
    await broker.startup()
    yield broker
    await broker.shutdown()


def _message(task_id: str) -> BrokerMessage:
    return BrokerMessage(
        task_id=task_id, task_name="count_items", message=task_id.encode(), labels={}
    )


async def test_a_delayed_message_reaches_the_stream_once_when_due(
    stream_broker: StreamBroker,
) -> None:
    stream = stream_broker.queue_name
    async with Redis.from_url(redis_url()) as redis:
        await send_later(stream_broker, _message("retry-1"), 0.4)
        assert await redis.zcard(delayed_key(stream_broker)) == 1
        movers = [DelayedMover(stream_broker) for _ in range(3)]  # three workers polling
        assert [await mover.move_due() for mover in movers] == [0, 0, 0]  # not yet due
        await anyio.sleep(0.5)
        moved = [await mover.move_due() for mover in movers]
        entries = await redis.xrange(stream)
        left = await redis.zcard(delayed_key(stream_broker))
    assert sorted(moved) == [0, 0, 1]
    assert [fields[b"data"] for _, fields in entries] == [b"retry-1"]
    assert left == 0


async def test_the_background_mover_keeps_going_until_stopped(stream_broker: StreamBroker) -> None:
    mover = DelayedMover(stream_broker, interval_s=0.05)
    mover.start()
    try:
        await send_later(stream_broker, _message("retry-2"), 0.1)
        await send_later(stream_broker, _message("retry-3"), 0.2)
        async with Redis.from_url(redis_url()) as redis:
            with anyio.fail_after(5):
                while await redis.xlen(stream_broker.queue_name) < 2:  # noqa: ASYNC110 - polls Redis
                    await anyio.sleep(0.05)
            data = [f[b"data"] for _, f in await redis.xrange(stream_broker.queue_name)]
    finally:
        await mover.stop()
    assert data == [b"retry-2", b"retry-3"]
