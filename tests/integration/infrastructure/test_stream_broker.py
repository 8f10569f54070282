"""The stream broker under failure: dead workers, long tasks, trimming, Redis restarts."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from jobs_service.broker import build_broker
from jobs_service.core.settings import Settings
from jobs_service.infrastructure.redis_broker import StreamBroker
from jobs_service.infrastructure.redis_values import redis_text
from jobs_service.infrastructure.stream_upkeep import StreamUpkeep, trim_acknowledged
from tests.support.redis_server import PrivateRedis
from tests.support.services import redis_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from taskiq import AckableMessage

pytestmark = pytest.mark.anyio


@pytest.fixture
async def make_worker(redis_prefix: str) -> AsyncIterator[Callable[..., StreamBroker]]:
    """Worker brokers sharing one fresh stream, each its own consumer."""
    prefix = f"{redis_prefix}-{uuid.uuid4().hex[:6]}"
    made: list[StreamBroker] = []

    def make(url: str | None = None, **broker: float) -> StreamBroker:
        settings = Settings(redis_url=url or redis_url(), redis_prefix=prefix, broker=broker)
        worker = build_broker(settings)
        assert isinstance(worker, StreamBroker)  # not a worker process: no upkeep loops
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.shutdown()


async def _next(worker: StreamBroker, within_s: float) -> AckableMessage | None:
    """The next message ``listen`` yields, or None if none comes in time."""
    listener = worker.listen()
    with anyio.move_on_after(within_s):
        return await anext(listener)
    return None


async def test_a_dead_workers_message_is_reclaimed_without_new_work(
    make_worker: Callable[..., StreamBroker],
) -> None:
    dead = make_worker(idle_timeout_s=1, reclaim_interval_s=0.2)
    live = make_worker(idle_timeout_s=1, reclaim_interval_s=0.2)
    await dead.startup()
    await live.startup()
    await live.kick_many([_message(b"job-1")])
    taken = await _next(dead, 2)
    assert taken is not None
    assert taken.data == b"job-1"
    # `dead` never acks nor renews. No other message arrives, yet `live` gets it.
    started = anyio.current_time()
    reclaimed = await _next(live, 5)
    assert reclaimed is not None
    assert reclaimed.data == b"job-1"
    assert 0.8 <= anyio.current_time() - started <= 3
    await reclaimed.ack()  # type: ignore[misc]
    assert await _next(make_worker(idle_timeout_s=1, reclaim_interval_s=0.2), 2) is None


async def test_a_renewed_lease_is_not_reclaimed_however_long_the_task(
    make_worker: Callable[..., StreamBroker],
) -> None:
    busy = make_worker(idle_timeout_s=1, reclaim_interval_s=0.2)
    other = make_worker(idle_timeout_s=1, reclaim_interval_s=0.2)
    await busy.startup()
    await other.startup()
    await busy.kick_many([_message(b"long")])
    taken = await _next(busy, 2)
    assert taken is not None
    upkeep = StreamUpkeep(busy, prefix="unused", max_lease_s=3600)
    stolen = None
    with anyio.move_on_after(3.5):  # three idle timeouts
        async with anyio.create_task_group() as group:

            async def renew() -> None:
                while True:
                    assert await upkeep.renew_leases() == 1
                    await anyio.sleep(0.3)

            group.start_soon(renew)
            stolen = await _next(other, 3.4)
            group.cancel_scope.cancel()
    assert stolen is None
    await taken.ack()  # type: ignore[misc]
    assert busy.held == {}


async def test_trimming_removes_only_acknowledged_entries(
    make_worker: Callable[..., StreamBroker],
) -> None:
    worker = make_worker()
    await worker.startup()
    await worker.kick_many([_message(f"m{i}".encode()) for i in range(10)])
    listener = worker.listen()
    messages = [await anext(listener) for _ in range(10)]
    for message in messages[:4] + messages[6:]:
        await message.ack()  # type: ignore[misc]
    async with Redis.from_url(redis_url()) as redis:
        removed = await trim_acknowledged(redis, worker.queue_name, worker.consumer_group_name)
        left = [fields[b"data"] for _, fields in await redis.xrange(worker.queue_name)]
    assert removed == 4  # m0..m3; m4 and m5 are still pending, so nothing after them goes
    assert left == [b"m4", b"m5", b"m6", b"m7", b"m8", b"m9"]


async def test_the_read_loop_survives_a_redis_restart(
    make_worker: Callable[..., StreamBroker], tmp_path: Path
) -> None:
    server = PrivateRedis(tmp_path, durable=True)
    server.start()
    try:
        worker = make_worker(server.url, reclaim_interval_s=0.2)
        await worker.startup()
        await worker.kick_many([_message(b"before")])
        listener = worker.listen()
        first = await anext(listener)
        await first.ack()  # type: ignore[misc]
        server.stop()
        server.start()  # same port, same append-only file
        async with Redis.from_url(server.url) as redis:
            await redis.xadd(worker.queue_name, {b"data": b"after"})
        with anyio.fail_after(15):
            second = await anext(listener)
    finally:
        server.stop()
    assert (first.data, second.data) == (b"before", b"after")


def _message(data: bytes) -> object:
    from taskiq.message import BrokerMessage  # noqa: PLC0415

    return BrokerMessage(task_id=uuid.uuid4().hex, task_name="t", message=data, labels={})


async def test_a_read_batch_is_held_whole_until_the_worker_lets_it_go(
    make_worker: Callable[..., StreamBroker],
) -> None:
    """Messages read but not started yet are renewed too; a stopping worker drops them."""
    busy = make_worker(idle_timeout_s=1, reclaim_interval_s=0.2, xread_count=5)
    other = make_worker(idle_timeout_s=1, reclaim_interval_s=0.2)
    await busy.startup()
    await other.startup()
    await busy.kick_many([_message(f"b{i}".encode()) for i in range(5)])
    listener = busy.listen()
    first = await anext(listener)  # one slot: the other four wait in the batch
    assert len(busy.held) == 5
    upkeep = StreamUpkeep(busy, prefix="unused", max_lease_s=3600)
    stolen = None
    with anyio.move_on_after(2.5):
        async with anyio.create_task_group() as group:

            async def renew() -> None:
                while True:
                    await upkeep.renew_leases()
                    await anyio.sleep(0.3)

            group.start_soon(renew)
            stolen = await _next(other, 2.4)
            group.cancel_scope.cancel()
    assert stolen is None
    await listener.aclose()  # the worker stops: the four unstarted ones are let go
    assert list(busy.held) != []
    assert len(busy.held) == 1
    await first.ack()  # type: ignore[misc]
    taken = []
    other_listener = other.listen()
    with anyio.move_on_after(5):
        while len(taken) < 4:
            taken.append((await anext(other_listener)).data)
    assert sorted(taken) == [b"b1", b"b2", b"b3", b"b4"]


async def test_a_dead_workers_message_is_reclaimed_behind_many_held_by_live_workers(
    make_worker: Callable[..., StreamBroker],
) -> None:
    """XAUTOCLAIM looks at ten entries per message asked for: a one-slot worker must
    still find the dead worker's message behind 120 older ones a live worker renews."""
    busy = make_worker(idle_timeout_s=1, reclaim_interval_s=0.2)
    dead = make_worker(idle_timeout_s=1, reclaim_interval_s=0.2)
    rescuer = make_worker(idle_timeout_s=1, reclaim_interval_s=0.2)
    for worker in (busy, dead, rescuer):
        await worker.startup()
    await busy.kick_many([_message(f"long-{n}".encode()) for n in range(120)])
    held = await busy.read(120)
    assert len(held) == 120
    await busy.kick_many([_message(b"orphan")])
    assert [d.data for d in await dead.read(1)] == [b"orphan"]
    upkeep = StreamUpkeep(busy, prefix="unused", max_lease_s=3600)
    found: list[bytes] = []
    with anyio.move_on_after(4):
        while not found:
            assert await upkeep.renew_leases() == 120
            found = [d.data for d in await rescuer.read(1)]
    assert found == [b"orphan"]


async def test_a_connection_lost_halfway_through_a_reclaim_strands_no_message(
    make_worker: Callable[..., StreamBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reclaim takes a dead worker's three messages; the connection drops while it
    reads the second one's delivery count. The first, already held, must not stay held
    (renewed for hours) without being handed over: the retried read returns all three."""
    dead = make_worker(idle_timeout_s=1, reclaim_interval_s=0.2)
    rescuer = make_worker(idle_timeout_s=1, reclaim_interval_s=0.2)
    await dead.startup()
    await rescuer.startup()
    await rescuer.kick_many([_message(b"m1"), _message(b"m2"), _message(b"m3")])
    assert len(await dead.read(3)) == 3
    await anyio.sleep(1.2)  # idle past the timeout: due for a reclaim

    drops = iter([False, True])
    xpending_range = Redis.xpending_range

    async def drops_once(self: Redis, *args: Any, **kwargs: Any) -> Any:
        if next(drops, False):
            raise RedisConnectionError("Connection reset by peer")
        return await xpending_range(self, *args, **kwargs)

    monkeypatch.setattr(Redis, "xpending_range", drops_once)
    upkeep = StreamUpkeep(rescuer, prefix="unused", max_lease_s=3600)
    got: list[bytes] = []
    with anyio.move_on_after(6):
        while len(got) < 3:
            await upkeep.renew_leases()  # what the worker's lease loop does meanwhile
            with anyio.move_on_after(0.3):
                got += [d.data for d in await rescuer.read(3)]
    assert sorted(got) == [b"m1", b"m2", b"m3"]


async def test_an_entry_that_is_no_message_is_set_aside_and_the_worker_goes_on(
    make_worker: Callable[..., StreamBroker],
) -> None:
    """An entry without a ``data`` field (``XADD`` by hand, another program) is moved to
    the dead-letter stream as it was and acknowledged, whether read or reclaimed; the
    messages around it run, and the worker's read loop does not stop."""
    first = make_worker(idle_timeout_s=1, reclaim_interval_s=0.2)
    rescuer = make_worker(idle_timeout_s=1, reclaim_interval_s=0.2)
    await first.startup()
    await rescuer.startup()
    async with Redis.from_url(redis_url()) as redis:
        stray = redis_text(await redis.xadd(first.queue_name, {b"task": b"count_invoices"}))
        await first.kick_many([_message(b"good")])
        [good] = await first.read(10)
        assert good.data == b"good"
        await good.ack()
        # The same entry met by a reclaim: pending on a consumer that died on it.
        # (with an "id" of its own, kept: its stream id goes under "message_id")
        reclaimed = redis_text(await redis.xadd(first.queue_name, {b"note": b"x", b"id": b"42"}))
        await redis.xreadgroup(first.consumer_group_name, "gone", {first.queue_name: ">"})
        await anyio.sleep(1.2)
        with anyio.move_on_after(3):
            assert await rescuer.read(10) == []
        set_aside = await redis.xrange(first.dead_letter_stream)
        pending = await redis.xpending(first.queue_name, first.consumer_group_name)
    assert [fields for _, fields in set_aside] == [
        {b"task": b"count_invoices", b"id": stray.encode()},
        {b"note": b"x", b"id": b"42", b"message_id": reclaimed.encode()},
    ]
    assert pending["pending"] == 0
