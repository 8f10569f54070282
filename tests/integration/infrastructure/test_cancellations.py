"""Cancellations through the real Redis: published, stored, and learned by workers that
were listening, start later, or lost their connection meanwhile."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import ConnectionPool, Redis

from jobs_service.infrastructure.cancellations import (
    CANCELLATION_TTL_S,
    Cancellation,
    CancellationFeed,
    cancellation_key,
    publish_cancellation,
    read_cancellation,
)
from jobs_service.middlewares.cancellation import CancellationRegistry
from tests.support.redis_server import PrivateRedis
from tests.support.services import redis_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pool() -> AsyncIterator[ConnectionPool]:
    connections = ConnectionPool.from_url(redis_url(), health_check_interval=1)
    yield connections
    await connections.aclose()


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return f"{redis_prefix}-cancel-{uuid.uuid4().hex[:6]}"


def _token(run_id: str, upto: int = 1) -> Cancellation:
    return Cancellation(run_id, upto=upto, by="operator", at=time.time())


async def _until_known(registry: CancellationRegistry, run_id: str, attempt: int = 1) -> bool:
    for _ in range(200):
        if registry.find(run_id, attempt, automatic=False) is not None:
            return True
        await asyncio.sleep(0.02)
    return False


def _feed(pool: ConnectionPool, prefix: str, registry: CancellationRegistry) -> CancellationFeed:
    return CancellationFeed(pool, prefix, apply=registry.apply, prune=registry.prune)


async def test_a_published_cancellation_is_stored_for_a_day_and_reaches_a_listening_worker(
    pool: ConnectionPool, prefix: str
) -> None:
    registry = CancellationRegistry()
    feed = _feed(pool, prefix, registry)
    await feed.start()
    try:
        await publish_cancellation(pool, prefix, _token("run-a", upto=2))
        assert await _until_known(registry, "run-a", 2)
    finally:
        await feed.stop()
    async with Redis(connection_pool=pool) as redis:
        ttl = await redis.ttl(cancellation_key(prefix, "run-a"))
    assert CANCELLATION_TTL_S - 5 <= ttl <= CANCELLATION_TTL_S
    stored = await read_cancellation(pool, prefix, "run-a")
    assert stored is not None
    assert stored.upto == 2


async def test_a_worker_that_starts_later_knows_earlier_cancellations_before_it_starts(
    pool: ConnectionPool, prefix: str
) -> None:
    """`start()` returns only once every stored cancellation is known, so the worker's
    first message is already checked against them."""
    for number in range(1200):  # more than one SCAN/MGET batch
        async with Redis(connection_pool=pool) as redis:
            await redis.set(
                cancellation_key(prefix, f"old-{number}"), _token(f"old-{number}").dumps()
            )
    await publish_cancellation(pool, prefix, _token("run-b"))
    registry = CancellationRegistry()
    feed = _feed(pool, prefix, registry)
    await feed.start()
    await feed.stop()
    assert registry.find("run-b", 1, automatic=False) is not None
    assert len(registry) == 1201


async def test_after_a_redis_restart_the_feed_reconnects_and_learns_what_it_missed(
    tmp_path: Path,
) -> None:
    """Cancelled while the worker's subscription was down: the stored cancellation is
    read again when it reconnects."""
    server = PrivateRedis(tmp_path, durable=True)
    server.start()
    private = ConnectionPool.from_url(server.url, health_check_interval=1)
    registry = CancellationRegistry()
    feed = _feed(private, "restart", registry)
    try:
        await feed.start()
        server.stop()
        await asyncio.sleep(0.5)
        server.start()
        # Published (and stored) before the feed is back on its channel.
        await publish_cancellation(private, "restart", _token("run-c"))
        assert await _until_known(registry, "run-c")
    finally:
        await feed.stop()
        await private.aclose()
        server.stop()
