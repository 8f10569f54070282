"""The worker's receiver on a real Redis stream: batched reads, bounded prefetch,
acknowledgement after the task ran, results stored with it, TaskIQ's hook order."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import Redis
from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.serializers import ORJSONSerializer

from jobs_service.core.run_context import current_run
from jobs_service.infrastructure.receiver import JobsReceiver
from jobs_service.infrastructure.redis_broker import StreamBroker
from jobs_service.infrastructure.results import PipelinedResultBackend
from jobs_service.middlewares.run_context import RunContextMiddleware
from tests.support.redis_server import PrivateRedis
from tests.support.services import redis_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio


class _Recorder(TaskiqMiddleware):
    """Notes every hook call as (name, hook)."""

    def __init__(self, name: str, calls: list[tuple[str, str]]) -> None:
        super().__init__()
        self.name = name
        self.calls = calls

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        self.calls.append((self.name, "pre_execute"))
        return message

    async def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> None:
        del message, result, exception
        self.calls.append((self.name, "on_error"))

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        del message, result
        self.calls.append((self.name, "post_execute"))


@pytest.fixture
async def broker(redis_prefix: str) -> AsyncIterator[StreamBroker]:
    """A stream broker of its own (fresh stream and group), results in Redis."""
    prefix = f"{redis_prefix}-rx-{uuid.uuid4().hex[:6]}"
    made = StreamBroker(
        url=redis_url(),
        queue_name=f"{prefix}:tasks",
        consumer_group_name=f"{prefix}:workers",
        consumer_id="0",
        xread_block=100,
        reclaim_interval_s=60,
    ).with_result_backend(
        PipelinedResultBackend(
            redis_url=redis_url(),
            result_ex_time=60,
            serializer=ORJSONSerializer(),
            prefix_str=f"{prefix}:results",
        )
    )
    made = made.with_serializer(ORJSONSerializer())
    assert isinstance(made, StreamBroker)
    made.is_worker_process = True
    await made.startup()
    yield made
    await made.shutdown()


async def _pending(broker: StreamBroker) -> int:
    async with Redis.from_url(redis_url()) as redis:
        info = await redis.xpending(broker.queue_name, broker.consumer_group_name)
    return int(info["pending"])


async def _listen_until(receiver: JobsReceiver, done: asyncio.Event, timeout_s: float = 20) -> None:
    """Run the receiver until ``done``, then stop it as SIGTERM would."""
    finish = asyncio.Event()
    listening = asyncio.create_task(receiver.listen(finish))
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    finally:
        finish.set()
        await asyncio.wait_for(listening, timeout_s)


async def test_every_message_runs_once_and_is_acknowledged_only_after_it_ran(
    broker: StreamBroker,
) -> None:
    """Fifty messages through five slots: each runs once, its message still pending
    while it runs; never more read and unfinished than slots plus prefetch."""
    seen: list[int] = []
    pending_while_running: list[int] = []
    most_in_hand: list[int] = [0]
    done = asyncio.Event()
    receiver = JobsReceiver(broker, max_async_tasks=5, max_prefetch=3)

    @broker.task(task_name="visit_number")
    async def visit_number(n: int) -> int:
        most_in_hand[0] = max(most_in_hand[0], receiver.in_hand)
        pending_while_running.append(await _pending(broker))
        await asyncio.sleep(0.01)
        seen.append(n)
        if len(seen) == 50:
            done.set()
        return n * 2

    for n in range(50):
        await visit_number.kiq(n)
    await _listen_until(receiver, done)

    assert sorted(seen) == list(range(50))
    assert min(pending_while_running) >= 1
    assert 5 <= most_in_hand[0] <= 5 + 3
    assert await _pending(broker) == 0
    assert broker.held == {}


async def test_results_are_stored_with_the_acknowledgement(broker: StreamBroker) -> None:
    """A result can be read back through TaskIQ's own API once its message is acked."""
    done = asyncio.Event()

    @broker.task(task_name="double_number")
    async def double_number(n: int) -> dict[str, int]:
        done.set()
        return {"doubled": n * 2}

    sent = await double_number.kiq("21")  # parsed to int by its annotation, as TaskIQ does
    await _listen_until(JobsReceiver(broker, max_async_tasks=2), done)
    result = await sent.wait_result(timeout=5)
    assert result.return_value == {"doubled": 42}
    assert result.is_err is False


async def test_unreadable_messages_are_skipped_and_unknown_tasks_left_pending(
    broker: StreamBroker,
) -> None:
    """Garbage is acknowledged and skipped; a task this worker does not know stays
    pending, unheld, for a worker that knows it; the next message runs."""
    done = asyncio.Event()

    @broker.task(task_name="mark_done")
    async def mark_done() -> None:
        done.set()

    async with Redis.from_url(redis_url()) as redis:
        await redis.xadd(broker.queue_name, {b"data": b"{not json"})
        await redis.xadd(
            broker.queue_name,
            {
                b"data": b'{"task_id":"x","task_name":"no_such_task","labels":{},'
                b'"labels_types":{},"args":[],"kwargs":{}}'
            },
        )
    await mark_done.kiq()
    await _listen_until(JobsReceiver(broker, max_async_tasks=2), done)
    assert await _pending(broker) == 1
    assert not broker.held


async def test_on_shutdown_prefetched_messages_are_handed_back_not_run(
    broker: StreamBroker,
) -> None:
    """One slot, four read ahead: stopping runs the started task to its end and leaves
    the rest pending and unheld, so another worker takes them."""
    started = asyncio.Event()
    ran: list[int] = []

    @broker.task(task_name="hold_slot")
    async def hold_slot(n: int) -> None:
        started.set()
        await asyncio.sleep(0.3)
        ran.append(n)

    for n in range(6):
        await hold_slot.kiq(n)
    receiver = JobsReceiver(broker, max_async_tasks=1, max_prefetch=4)
    await _listen_until(receiver, started)

    assert ran == [0]
    assert broker.held == {}
    assert await _pending(broker) == 4  # read ahead, handed back; one never read


async def test_hooks_run_in_taskiq_order(broker: StreamBroker) -> None:
    """pre_execute in middleware order; on_error and post_execute in reverse."""
    calls: list[tuple[str, str]] = []
    broker.add_middlewares(_Recorder("first", calls), _Recorder("second", calls))
    done = asyncio.Event()

    @broker.task(task_name="fail_once")
    async def fail_once() -> None:
        done.set()
        raise RuntimeError("boom")

    await fail_once.kiq()
    await _listen_until(JobsReceiver(broker, max_async_tasks=1), done)
    assert calls == [
        ("first", "pre_execute"),
        ("second", "pre_execute"),
        ("second", "on_error"),
        ("first", "on_error"),
        ("second", "post_execute"),
        ("first", "post_execute"),
    ]


async def test_a_worker_stops_reading_after_its_task_budget(broker: StreamBroker) -> None:
    """``--max-tasks-per-child``: the receiver ends by itself after that many."""
    ran: list[int] = []

    @broker.task(task_name="count_run")
    async def count_run(n: int) -> None:
        ran.append(n)

    for n in range(10):
        await count_run.kiq(n)
    receiver = JobsReceiver(broker, max_async_tasks=2, max_tasks_to_execute=4)
    await asyncio.wait_for(receiver.listen(asyncio.Event()), 20)
    assert len(ran) == 4
    assert await _pending(broker) == 0


async def test_a_message_labelled_store_result_false_leaves_no_result(
    broker: StreamBroker,
) -> None:
    """Jobs Service's own runs carry store_result=False: acknowledged, nothing stored
    (their outcome is in the run history); an unlabelled message next to it is stored."""
    done = asyncio.Event()
    finished: list[int] = []

    @broker.task(task_name="note_number")
    async def note_number(n: int) -> int:
        finished.append(n)
        if len(finished) == 2:
            done.set()
        return n

    unstored = await note_number.kicker().with_labels(store_result=False).kiq(1)
    stored = await note_number.kiq(2)
    await _listen_until(JobsReceiver(broker, max_async_tasks=1), done)
    await broker.completions.drain(timeout_s=5)
    assert await broker.result_backend.is_result_ready(stored.task_id)
    assert not await broker.result_backend.is_result_ready(unstored.task_id)
    assert await _pending(broker) == 0


async def test_a_run_starts_before_the_next_read_goes_out(broker: StreamBroker) -> None:
    """The runs of a batch take their first step before the worker sends its next read:
    a read sent first (a socket write that wakes Redis) would hold their start back."""
    events: list[str] = []
    done = asyncio.Event()
    receiver = JobsReceiver(broker, max_async_tasks=10, max_prefetch=0)
    read = broker.read

    async def noting_read(count: int) -> list[Any]:
        events.append("read sent")
        batch = await read(count)
        if batch:
            events.append(f"read {len(batch)}")
        return batch

    broker.read = noting_read  # type: ignore[method-assign]

    @broker.task(task_name="note_start")
    async def note_start(n: int) -> None:
        events.append(f"start {n}")
        if n == 2:
            done.set()

    for n in range(3):
        await note_start.kiq(n)
    await _listen_until(receiver, done)

    delivered = events.index("read 3")  # all three came in one read
    assert events[delivered + 1 : delivered + 5] == ["start 0", "start 1", "start 2", "read sent"]


async def test_a_worker_stops_even_when_a_read_swallows_its_cancellation(
    broker: StreamBroker,
) -> None:
    """redis-py can lose the cancellation of a blocking read answered at that moment
    (redis/redis-py#2028): the reader must end all the same once the worker stops."""
    read = broker.read
    swallowed: list[int] = []

    async def swallowing_read(count: int) -> list[Any]:
        try:
            return await read(count)
        except asyncio.CancelledError:
            swallowed.append(count)
            return []  # the cancellation is lost, as in that race

    broker.read = swallowing_read  # type: ignore[method-assign]
    # Reads block for 3 s (not the fixture's 0.1 s): the stop must land inside one, not
    # between two, whatever the machine's speed.
    broker.block = 3000
    finish = asyncio.Event()
    listening = asyncio.create_task(JobsReceiver(broker, max_async_tasks=2).listen(finish))
    await asyncio.sleep(0.5)  # reading, blocked on the empty stream
    finish.set()
    await asyncio.wait_for(listening, timeout=5)
    assert swallowed  # the cancellation did reach the read, and was lost there


class _Durations(TaskiqMiddleware):
    """Notes, in post_execute, each run's duration and end as its context has them."""

    def __init__(self, seen: dict[str, tuple[float, float]], started: list[str]) -> None:
        super().__init__()
        self.seen = seen
        self.started = started
        self.started_before_bookkeeping: dict[str, list[str]] = {}

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        del result
        run = current_run()
        assert run is not None
        assert run.finished_at is not None
        ended = (run.finished_at - run.started_at).total_seconds()
        self.seen[message.task_name] = (run.elapsed_s(), ended)
        self.started_before_bookkeeping[message.task_name] = list(self.started)


async def test_a_runs_duration_ends_when_its_function_returns_not_at_its_bookkeeping(
    broker: StreamBroker,
) -> None:
    """The slot is freed before the run's bookkeeping, so the next run's start goes
    first; a start that holds the loop 300 ms must not count in the first run's
    duration, end time or metrics, all of which are read in the bookkeeping."""
    seen: dict[str, tuple[float, float]] = {}
    started: list[str] = []
    durations = _Durations(seen, started)
    broker.add_middlewares(RunContextMiddleware(), durations)
    done = asyncio.Event()

    @broker.task(task_name="brief_run")
    async def brief_run() -> None:
        await asyncio.sleep(0.02)

    @broker.task(task_name="hold_the_loop")
    async def hold_the_loop() -> None:
        started.append("hold_the_loop")
        time.sleep(0.3)  # noqa: ASYNC251 - blocking on purpose: a CPU-bound start
        done.set()

    await brief_run.kiq()
    await hold_the_loop.kiq()
    await _listen_until(JobsReceiver(broker, max_async_tasks=1, max_prefetch=1), done)

    # The case at hand: the next run's start went before the first run's bookkeeping.
    assert durations.started_before_bookkeeping["brief_run"] == ["hold_the_loop"]
    elapsed, ended = seen["brief_run"]
    assert 0.02 <= elapsed < 0.2
    assert 0.02 <= ended < 0.2
    held, _ = seen["hold_the_loop"]
    assert held >= 0.3


async def test_a_worker_started_before_redis_waits_for_it_then_works(tmp_path: Path) -> None:
    """Redis not up yet when the worker starts (a deployment's usual race): the worker
    does not crash (it crash-looped with a traceback each time); it reads once Redis
    answers, creating its group then, and runs what was queued."""
    server = PrivateRedis(tmp_path)

    def stream_broker() -> StreamBroker:
        made = StreamBroker(
            url=server.url,
            queue_name="late:tasks",
            consumer_group_name="late:workers",
            consumer_id="0",
            xread_block=100,
            reclaim_interval_s=60,
        ).with_serializer(ORJSONSerializer())
        assert isinstance(made, StreamBroker)
        return made

    worker = stream_broker()
    worker.is_worker_process = True
    ran = asyncio.Event()

    @worker.task(task_name="note_arrival")
    async def note_arrival() -> None:
        ran.set()

    await worker.startup()  # Redis is not running: must not raise
    receiver = JobsReceiver(worker, max_async_tasks=2, max_prefetch=0, run_startup=False)
    finish = asyncio.Event()
    listening = asyncio.create_task(receiver.listen(finish))
    try:
        await asyncio.sleep(0.5)
        assert not listening.done()
        server.start()
        producer = stream_broker()
        producer.register_task(note_arrival.original_func, "note_arrival")
        await producer.startup()
        await producer.find_task("note_arrival").kiq()  # type: ignore[union-attr]
        await asyncio.wait_for(ran.wait(), timeout=20)
        await producer.shutdown()
    finally:
        finish.set()
        await asyncio.wait_for(listening, timeout=20)
        await worker.shutdown()
        server.stop()
