"""Queue depth and oldest ages, read from the real Redis at scrape time, and bounded when
Redis does not answer."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from jobs_service.broker import build_broker
from jobs_service.core.settings import Settings
from jobs_service.infrastructure.delayed import delayed_key
from jobs_service.infrastructure.queue_metrics import QueueProbe, queue_exposition
from jobs_service.infrastructure.redis_broker import StreamBroker
from tests.support.services import redis_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


def _broker(url: str, prefix: str) -> StreamBroker:
    broker = build_broker(Settings(redis_url=url, redis_prefix=prefix))
    assert isinstance(broker, StreamBroker)
    return broker


@pytest.fixture
async def stream_broker(redis_prefix: str) -> AsyncIterator[StreamBroker]:
    broker = _broker(redis_url(), f"{redis_prefix}-{uuid.uuid4().hex[:6]}")
    await broker.startup()
    yield broker
    await broker.shutdown()


def _samples(text: bytes) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("state", "")): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


async def test_depth_counts_ready_pending_delayed_and_dead_letter_messages(
    stream_broker: StreamBroker,
) -> None:
    """Three queued (one read by a worker), two delayed, one dead-lettered: each state is
    counted, and the oldest ready and pending messages are aged from their stream ids."""
    stream, group = stream_broker.queue_name, stream_broker.consumer_group_name
    async with Redis.from_url(redis_url()) as redis:
        for n in range(3):
            await redis.xadd(stream, {"data": f"m{n}"})
        await redis.xreadgroup(group, "metrics-test", {stream: ">"}, count=1)
        await redis.zadd(delayed_key(stream_broker), {"d1": time.time() + 60, "d2": 1.0})
        await redis.xadd(stream_broker.dead_letter_stream, {"data": "x", "id": "1-0"})
        await asyncio.sleep(0.3)
        snapshot = await QueueProbe(stream_broker).snapshot()
    assert snapshot.up
    assert snapshot.queue == stream
    assert snapshot.depth == {"ready": 2, "pending": 1, "delayed": 2, "dead_letter": 1}
    assert 0.25 <= snapshot.oldest_age_s["ready"] < 30
    assert 0.25 <= snapshot.oldest_age_s["pending"] < 30
    samples = _samples(queue_exposition(snapshot))
    assert samples[("jobs_queue_up", "")] == 1
    assert samples[("jobs_queue_depth", "ready")] == 2
    assert samples[("jobs_queue_depth", "dead_letter")] == 1
    assert samples[("jobs_queue_oldest_age_seconds", "pending")] >= 0.25


async def test_an_empty_queue_reads_zero_everywhere(stream_broker: StreamBroker) -> None:
    """A drained queue: zero depth and zero ages, not missing samples."""
    snapshot = await QueueProbe(stream_broker).snapshot()
    assert snapshot.depth == {"ready": 0, "pending": 0, "delayed": 0, "dead_letter": 0}
    assert snapshot.oldest_age_s == {"ready": 0.0, "pending": 0.0}


async def test_before_any_worker_created_the_group_everything_queued_is_ready(
    redis_prefix: str,
) -> None:
    """The gateway may be scraped before a worker ever started: no group, messages wait."""
    broker = _broker(redis_url(), f"{redis_prefix}-{uuid.uuid4().hex[:6]}")
    async with Redis.from_url(redis_url()) as redis:
        await redis.xadd(broker.queue_name, {"data": "early"})
        snapshot = await QueueProbe(broker).snapshot()
    await broker.connection_pool.disconnect()
    assert snapshot.up
    assert snapshot.depth["ready"] == 1
    assert snapshot.depth["pending"] == 0
    assert snapshot.oldest_age_s["ready"] >= 0


async def test_concurrent_scrapes_share_one_reading(stream_broker: StreamBroker) -> None:
    """Two Prometheus replicas scraping together cost one read of Redis."""
    probe = QueueProbe(stream_broker, max_age_s=5)
    first, second = await asyncio.gather(probe.snapshot(), probe.snapshot())
    assert first is second


async def test_a_redis_that_never_answers_costs_a_scrape_at_most_the_timeout(
    redis_prefix: str,
) -> None:
    """A server that accepts and then says nothing (a hung Redis, a partition): the read
    gives up after the timeout and the scrape exposes up 0 and no depth."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    broker = _broker(f"redis://127.0.0.1:{port}/0", f"{redis_prefix}-hung")
    probe = QueueProbe(broker, timeout_s=0.3, max_age_s=0)
    started = time.monotonic()
    snapshot = await probe.snapshot()
    elapsed = time.monotonic() - started
    await broker.connection_pool.disconnect()
    server.close()
    await server.wait_closed()
    assert not snapshot.up
    assert elapsed < 1.5
    samples = _samples(queue_exposition(snapshot))
    assert samples == {("jobs_queue_up", ""): 0}


async def test_a_refused_connection_reads_as_down(redis_prefix: str) -> None:
    """Nothing listens at the address: up 0 at once, and the next scrape tries again."""
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    broker = _broker(f"redis://127.0.0.1:{port}/0", f"{redis_prefix}-down")
    probe = QueueProbe(broker, max_age_s=0)
    first = await probe.snapshot()
    second = await probe.snapshot()
    await broker.connection_pool.disconnect()
    assert (first.up, second.up) == (False, False)
    assert first is not second
