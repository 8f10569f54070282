"""Sends that Redis took and never answered: the run may be queued, so no caller may be
told "nothing was queued", and a keyed run is queued exactly once whatever follows.

Redis stalls (a partition, a frozen host: no reset) while a send is under way: the send
times out, and Redis runs the command when it resumes. Or the connection is lost after
the command was written and before Redis got it: nothing is queued, and nothing says so.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import select, update

from jobs_service.broker import stream_names
from jobs_service.client import EnqueueError, JobsClient
from jobs_service.core.settings import Settings
from jobs_service.infrastructure.models import JobRun
from tests.support.clients import client_for
from tests.support.redis_server import PrivateRedis
from tests.support.services import redis_url
from tests.support.tcp_proxy import BlackHoleProxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio


async def _stream_runs(url: str, prefix: str, kwargs: dict[str, object]) -> list[str]:
    """The run ids of the stream's messages with ``kwargs``, in stream order."""
    async with Redis.from_url(url) as redis:
        entries = await redis.xrange(stream_names(Settings(redis_prefix=prefix))["stream"])
    messages = [orjson.loads(fields[b"data"]) for _, fields in entries]
    return [message["task_id"] for message in messages if message["kwargs"] == kwargs]


async def _marked(client: JobsClient, run_id: str) -> tuple[str, bool] | None:
    """The run's status and whether it is marked unconfirmed; None without a row."""
    run = await client.get_run(run_id)
    return (
        None if run is None else (run.status, getattr(run, "send_unconfirmed_at", None) is not None)
    )


def _unconfirmed_count(task: str) -> float:
    """``jobs_sends_unconfirmed_total`` of ``task`` in this process."""
    return REGISTRY.get_sample_value("jobs_sends_unconfirmed_total", {"task": task}) or 0.0


async def test_a_resubmit_with_the_key_after_a_broker_stall_makes_no_second_run(
    tmp_path: Path, pg_url: str
) -> None:
    """The keyed submit's send reaches a frozen Redis and times out: 503, but the claim
    is kept. Redis resumes and queues the run; the resubmit with the key replays that
    run, and its send again adds nothing: one run, one message."""
    server = PrivateRedis(tmp_path)
    server.start()
    prefix = f"stall-{uuid.uuid4().hex[:6]}"
    key = f"order-{uuid.uuid4().hex}"
    kwargs = {"items": [f"order-{key}"]}
    try:
        async with client_for(pg_url, server.url, prefix) as client:
            await client.broker.startup()
            await client.enqueue("count_items", {"items": ["warm-up"]})  # connections made
            with server.hung(), pytest.raises(EnqueueError) as unconfirmed:
                await client.submit("count_items", kwargs, idempotency_key=key)
            await asyncio.sleep(0.5)  # Redis runs on with what it received
            resubmitted = await client.submit("count_items", kwargs, idempotency_key=key)
            marked = await _marked(client, resubmitted.run_id)
        queued = await _stream_runs(server.url, prefix, kwargs)
    finally:
        server.stop()
    assert queued == [resubmitted.run_id], f"{len(queued)} messages for one key: {queued}"
    assert resubmitted.replayed
    assert "recorded as queued" in str(unconfirmed.value)
    assert marked == ("queued", False)  # the repeat's send confirmed it


async def test_a_keyless_submit_whose_send_is_unconfirmed_says_its_run_may_be_queued(
    tmp_path: Path, pg_url: str
) -> None:
    """Without a key the run cannot be replayed: the 503 must not say the broker did
    not accept it (it is queued once Redis resumes) but name it, so it can be looked up."""
    server = PrivateRedis(tmp_path)
    server.start()
    prefix = f"stall-{uuid.uuid4().hex[:6]}"
    kwargs = {"items": [f"keyless-{uuid.uuid4().hex}"]}
    try:
        async with client_for(pg_url, server.url, prefix) as client:
            await client.broker.startup()
            await client.enqueue("count_items", {"items": ["warm-up"]})
            counted_before = _unconfirmed_count("count_items")
            with server.hung(), pytest.raises(EnqueueError) as unconfirmed:
                await client.submit("count_items", kwargs)
            await asyncio.sleep(0.5)
        queued = await _stream_runs(server.url, prefix, kwargs)
    finally:
        server.stop()
    assert _unconfirmed_count("count_items") == counted_before + 1
    assert len(queued) == 1  # queued once, by the stalled send itself
    assert "did not accept" not in str(unconfirmed.value)
    assert queued[0] in str(unconfirmed.value)
    assert getattr(unconfirmed.value, "run_ids", None) == queued


@pytest.fixture
async def cut_redis() -> AsyncIterator[BlackHoleProxy]:
    """A proxy to the test Redis that can lose a script call before Redis gets it."""
    proxy = BlackHoleProxy("127.0.0.1", int(redis_url().rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_a_kept_claim_whose_message_never_landed_is_sent_once_by_the_sweep(
    cut_redis: BlackHoleProxy, migrated_pg_url: str
) -> None:
    """The keyed send is lost with its connection before Redis got it, and nobody
    repeats the key: the claim stays queued and marked, nothing is in the stream. The
    sweep sends it (once, however often it runs) and unmarks it."""
    from jobs_service.tasks.maintenance import resend_unconfirmed_runs  # noqa: PLC0415

    prefix = f"cut-{uuid.uuid4().hex[:6]}"
    key = f"order-{uuid.uuid4().hex}"
    kwargs = {"items": [f"lost-{key}"]}
    async with (
        client_for(migrated_pg_url, f"redis://127.0.0.1:{cut_redis.port}/0", prefix) as cut,
        client_for(migrated_pg_url, redis_url(), prefix) as healthy,
    ):
        await cut.broker.startup()
        await healthy.broker.startup()
        await cut.enqueue("count_items", {"items": ["warm-up"]})  # a connection made
        cut_redis.cut_on = b"EVALSHA"
        with pytest.raises(EnqueueError) as unconfirmed:
            await cut.submit("count_items", kwargs, idempotency_key=key)
        run_id = unconfirmed.value.run_ids[0]  # type: ignore[attr-defined]
        kept = await _marked(healthy, run_id)
        nothing = await _stream_runs(redis_url(), prefix, kwargs)
        fresh = await resend_unconfirmed_runs.original_func(outbox=healthy)
        async with healthy._database.engine.begin() as connection:
            await connection.execute(
                update(JobRun)
                .where(JobRun.run_id == run_id)
                .values(send_unconfirmed_at=datetime.now(UTC) - timedelta(minutes=1))
            )
        swept = await resend_unconfirmed_runs.original_func(outbox=healthy)
        again = await healthy.resend([run_id])  # as a late repeat would
        after = await _marked(healthy, run_id)
        queued = await _stream_runs(redis_url(), prefix, kwargs)
    assert kept == ("queued", True)
    assert nothing == []
    assert fresh["checked"] == 0  # a repeat of the key gets the first chance
    assert swept == {"checked": 1, "resent": 1, "started": 0, "errors": 0}
    assert again.sent == [run_id]
    assert after == ("queued", False)
    assert queued == [run_id]


async def test_a_keyed_submit_whose_connection_is_refused_keeps_no_claim(pg_url: str) -> None:
    """A refused connection sent nothing: the claim goes, and the error says so."""
    prefix = f"refused-{uuid.uuid4().hex[:6]}"
    key = f"order-{uuid.uuid4().hex}"
    async with client_for(pg_url, "redis://127.0.0.1:1/0", prefix) as client:
        with pytest.raises(EnqueueError, match="did not accept") as refused:
            await client.submit("count_items", {"items": ["x"]}, idempotency_key=key)
        async with client._database.sessions() as session:
            claims = (
                await session.execute(select(JobRun.run_id).where(JobRun.idempotency_key == key))
            ).all()
    assert type(refused.value) is EnqueueError
    assert claims == []


async def test_an_operator_retry_whose_send_is_unconfirmed_stays_queued_and_is_sent_once(
    cut_redis: BlackHoleProxy, migrated_pg_url: str
) -> None:
    """A retry's send lost before Redis got it leaves the run queued and marked (not
    restored to failed, which would lose a run whose message did land); the sweep then
    queues that attempt once."""
    from jobs_service.client import EnqueueUnconfirmedError  # noqa: PLC0415

    prefix = f"retry-{uuid.uuid4().hex[:6]}"
    kwargs = {"items": [f"retried-{uuid.uuid4().hex}"]}
    async with (
        client_for(migrated_pg_url, f"redis://127.0.0.1:{cut_redis.port}/0", prefix) as cut,
        client_for(migrated_pg_url, redis_url(), prefix) as healthy,
    ):
        await cut.broker.startup()
        await healthy.broker.startup()
        run_id = await cut.enqueue("count_items", kwargs)
        async with healthy._database.engine.begin() as connection:
            await connection.execute(
                update(JobRun).where(JobRun.run_id == run_id).values(status="failed", attempt=1)
            )
        cut_redis.cut_on = b"EVALSHA"
        with pytest.raises(EnqueueUnconfirmedError) as unconfirmed:
            await cut.retry(run_id)
        kept = await _marked(healthy, run_id)
        resent = await healthy.resend_unconfirmed(datetime.now(UTC) + timedelta(seconds=1))
        twice = await healthy.resend([run_id])
        queued = await _stream_runs(redis_url(), prefix, kwargs)
    assert unconfirmed.value.recorded
    assert kept == ("queued", True)
    assert (resent.checked, resent.sent) == (1, 1)
    assert twice.sent == [run_id]
    assert queued == [run_id, run_id]  # the first attempt, and the retry once
