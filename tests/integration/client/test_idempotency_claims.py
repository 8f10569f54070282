"""A repeat of a keyed submit that arrives while the first is still being sent.

The key becomes visible only once its run is queued: a repeat then must neither be
told "queued" about a run whose send is about to fail (and whose row goes with it),
nor find a row that nothing will ever send.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from jobs_service.broker import stream_names
from jobs_service.client import EnqueueError, EnqueueUnconfirmedError
from jobs_service.core.settings import Settings
from jobs_service.infrastructure.models import JobRun
from tests.support.clients import client_for
from tests.support.redis_server import PrivateRedis
from tests.support.services import redis_url

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

KWARGS = {"items": ["order-42"]}


async def _stream_length(redis_url: str, prefix: str) -> int:
    settings = Settings(redis_url=redis_url, redis_prefix=prefix)
    async with Redis.from_url(redis_url) as redis:
        return int(await redis.xlen(stream_names(settings)["stream"]))


async def test_a_repeat_during_the_send_replays_once_the_run_is_queued(
    tmp_path: Path, pg_url: str
) -> None:
    """Redis hangs while the first request sends: the repeat waits for it, then
    replays that run; one run, one message."""
    server = PrivateRedis(tmp_path)
    server.start()
    prefix = f"claims-{uuid.uuid4().hex[:6]}"
    key = f"order-{uuid.uuid4().hex}"
    try:
        async with client_for(pg_url, server.url, prefix) as client:
            await client.broker.startup()
            with server.hung():
                first = asyncio.create_task(
                    client.submit("count_items", KWARGS, idempotency_key=key)
                )
                await asyncio.sleep(0.3)  # the first is sending, into a server that hangs
                repeat = asyncio.create_task(
                    client.submit("count_items", KWARGS, idempotency_key=key)
                )
                await asyncio.sleep(0.5)
                answered_while_sending = repeat.done()
            first_answer, repeat_answer = await asyncio.wait_for(
                asyncio.gather(first, repeat), timeout=20
            )
            run = await client.get_run(first_answer.run_id)
        messages = await _stream_length(server.url, prefix)
    finally:
        server.stop()
    assert not answered_while_sending
    assert not first_answer.replayed
    assert repeat_answer.replayed
    assert repeat_answer.run_id == first_answer.run_id
    assert run is not None
    assert run.status == "queued"
    assert messages == 1


async def _hang_then_drop(listening: asyncio.Event, drop: asyncio.Event) -> asyncio.Server:
    """A TCP server that takes connections, answers nothing, and closes them (and
    itself) once ``drop`` is set: a broker whose send fails after a while."""

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listening.set()
        await drop.wait()
        writer.close()

    return await asyncio.start_server(hold, "127.0.0.1", 0)


async def test_a_repeat_during_a_send_that_fails_queues_the_run_itself(
    pg_url: str,
) -> None:
    """The first request's broker takes the connection and then drops it: that
    request fails and leaves nothing. A repeat made meanwhile (through a healthy
    broker) was held until then and queues the run itself: its caller's 202 is true."""
    connected, drop = asyncio.Event(), asyncio.Event()
    failing = await _hang_then_drop(connected, drop)
    port = failing.sockets[0].getsockname()[1]
    prefix = f"claims-{uuid.uuid4().hex[:6]}"
    key = f"order-{uuid.uuid4().hex}"
    try:
        async with (
            client_for(pg_url, f"redis://127.0.0.1:{port}/0", prefix) as doomed,
            client_for(pg_url, redis_url(), prefix) as healthy,
        ):
            await healthy.broker.startup()
            first = asyncio.create_task(doomed.submit("count_items", KWARGS, idempotency_key=key))
            await asyncio.wait_for(connected.wait(), timeout=10)
            repeat = asyncio.create_task(healthy.submit("count_items", KWARGS, idempotency_key=key))
            await asyncio.sleep(0.5)
            answered_while_sending = repeat.done()
            failing.close()  # reconnecting is refused from now on
            drop.set()
            with pytest.raises(EnqueueError):
                await asyncio.wait_for(first, timeout=20)
            answer = await asyncio.wait_for(repeat, timeout=20)
            first_run = await healthy.get_run(answer.run_id)
        messages = await _stream_length(redis_url(), prefix)
    finally:
        failing.close()
    assert not answered_while_sending
    assert not answer.replayed
    assert first_run is not None
    assert first_run.status == "queued"
    assert messages == 1


async def test_claims_waiting_for_a_hung_broker_leave_the_pool_to_others(
    tmp_path: Path, pg_url: str
) -> None:
    """Each keyed submit holds a connection while it sends. With Redis hung, six of
    them at once take at most half of a four-connection pool and give up within their
    bounds (503), while reads keep getting connections. Those that sent keep their
    claim, marked unconfirmed (EnqueueUnconfirmedError: their message may be in the
    stream); those that never got their turn leave nothing (EnqueueError)."""
    server = PrivateRedis(tmp_path)
    server.start()
    prefix = f"claims-{uuid.uuid4().hex[:6]}"
    keys = [f"order-{uuid.uuid4().hex}" for _ in range(6)]
    settings = Settings(
        database_url=pg_url,
        redis_url=server.url,
        redis_prefix=prefix,
        database={"pool_size": 4, "max_overflow": 0},
    )
    try:
        async with client_for(pg_url, server.url, prefix, settings=settings) as client:
            client.claim_timeout_s = 1.0
            await client.broker.startup()
            with server.hung():
                submits = [
                    asyncio.create_task(client.submit("count_items", KWARGS, idempotency_key=k))
                    for k in keys
                ]
                await asyncio.sleep(0.2)
                started = time.monotonic()
                reads = [await client.get_run("0" * 32) for _ in range(3)]
                read_s = time.monotonic() - started
                outcomes = await asyncio.gather(*submits, return_exceptions=True)
            async with client._database.sessions() as session:
                kept = dict(
                    (
                        await session.execute(
                            select(JobRun.run_id, JobRun.send_unconfirmed_at).where(
                                JobRun.idempotency_key.in_(keys)
                            )
                        )
                    ).all()
                )
    finally:
        server.stop()
    assert reads == [None, None, None]
    assert read_s < 1.0, read_s
    assert all(isinstance(outcome, EnqueueError) for outcome in outcomes), outcomes
    unconfirmed = [o for o in outcomes if isinstance(o, EnqueueUnconfirmedError)]
    assert 2 <= len(unconfirmed) < len(keys)
    assert sorted(kept) == sorted(o.run_ids[0] for o in unconfirmed)
    assert all(marked is not None for marked in kept.values())
