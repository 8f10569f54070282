"""Sends to Redis: a refusal is told from a send Redis took and never answered, and a
run sent more than once with ``once`` is added once."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from taskiq.message import BrokerMessage

from jobs_service.infrastructure.redis_sends import (
    SendUnconfirmedError,
    add_messages,
    sent_marker,
)
from tests.support.redis_server import PrivateRedis
from tests.support.services import redis_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio


def _message(run_id: str, queued_at: str = "1765000000.5") -> BrokerMessage:
    return BrokerMessage(
        task_id=run_id,
        task_name="count_items",
        message=f'{{"task_id": "{run_id}"}}'.encode(),
        labels={"queued_at": queued_at},
    )


@pytest.fixture
async def stream(redis_prefix: str) -> AsyncIterator[tuple[ConnectionPool, Redis, str]]:
    """A connection pool to the test Redis, a client, and a stream of this test's."""
    pool = ConnectionPool.from_url(redis_url())
    redis = Redis.from_url(redis_url())
    yield pool, redis, f"{redis_prefix}-{uuid.uuid4().hex[:6]}:tasks"
    await redis.aclose()
    await pool.aclose()


async def test_a_run_sent_again_with_once_is_added_once(
    stream: tuple[ConnectionPool, Redis, str],
) -> None:
    """However often a queueing of a run is sent with ``once``, it is added once; its
    marker lasts ``once_for_s``; another queueing of the same run (a retry) is added."""
    pool, redis, queue = stream
    first = _message("run-1")
    await add_messages(pool, [first, _message("run-2")], queue, None, once_for_s=120)
    await add_messages(pool, [first], queue, None, once_for_s=120)
    await add_messages(
        pool, [_message("run-1", queued_at="1765000099.5")], queue, 1000, once_for_s=120
    )
    entries = await redis.xrange(queue)
    ttl = await redis.ttl(sent_marker(queue, first))
    assert [fields[b"data"] for _, fields in entries] == [
        b'{"task_id": "run-1"}',
        b'{"task_id": "run-2"}',
        b'{"task_id": "run-1"}',
    ]
    assert 100 < ttl <= 120


async def test_sends_without_once_leave_no_marker(
    stream: tuple[ConnectionPool, Redis, str],
) -> None:
    """The keyless path adds every message it is given and writes nothing else."""
    pool, redis, queue = stream
    await add_messages(pool, [_message("run-1"), _message("run-1")], queue, None)
    assert await redis.xlen(queue) == 2
    assert [key async for key in redis.scan_iter(match=f"{queue}:sent:*")] == []


async def test_a_redis_that_forgot_the_script_still_adds(
    stream: tuple[ConnectionPool, Redis, str],
) -> None:
    """NOSCRIPT (a restarted Redis) is an answer: the script is sent whole, once."""
    pool, redis, queue = stream
    await redis.script_flush()
    await add_messages(pool, [_message("run-1")], queue, None, once_for_s=60)
    assert await redis.xlen(queue) == 1


async def test_a_refused_connection_is_not_an_unconfirmed_send() -> None:
    """Nothing was sent: the error is Redis's own, never SendUnconfirmedError."""
    pool = ConnectionPool.from_url("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(RedisConnectionError) as refused:
            await add_messages(pool, [_message("run-1")], "nowhere:tasks", None)
    finally:
        await pool.aclose()
    assert not isinstance(refused.value, SendUnconfirmedError)


async def test_a_send_redis_took_and_did_not_answer_is_unconfirmed_and_sent_once(
    tmp_path: Path,
) -> None:
    """A frozen Redis: the send times out once (no retry that would send it again),
    raises SendUnconfirmedError, and lands when Redis resumes; the same run sent again
    with ``once`` is then not added a second time."""
    server = PrivateRedis(tmp_path)
    server.start()
    pool = ConnectionPool.from_url(server.url, socket_timeout=0.5)
    queue = "stalled:tasks"
    try:
        await add_messages(pool, [_message("warm-up")], queue, None)  # a connection made
        with server.hung():
            started = asyncio.get_running_loop().time()
            with pytest.raises(SendUnconfirmedError):
                await add_messages(pool, [_message("run-1")], queue, None, once_for_s=60)
            waited = asyncio.get_running_loop().time() - started
        await asyncio.sleep(0.3)  # Redis runs what it received
        await add_messages(pool, [_message("run-1")], queue, None, once_for_s=60)
        async with Redis.from_url(server.url) as redis:
            entries = await redis.xrange(queue)
    finally:
        await pool.aclose()
        server.stop()
    assert waited < 1.0  # one socket timeout: not retried
    assert [fields[b"data"] for _, fields in entries] == [
        b'{"task_id": "warm-up"}',
        b'{"task_id": "run-1"}',
    ]
