"""The worker's receiver: TaskIQ's, with the per-message plumbing cut to what a run needs.

``jobsctl worker`` runs TaskIQ's worker with ``--receiver`` set to :class:`JobsReceiver`
(TaskIQ's extension point for this). TaskIQ's own ``Receiver`` spends more CPU moving a
message than a small task spends running: for each one it starts two helper asyncio
tasks and two ``asyncio.wait`` calls to prefetch it, awaits ``maybe_awaitable`` around
every middleware hook, rebuilds argument parsers and the dependency graph, and saves the
result and acknowledges in two more Redis round trips. This receiver:

- reads from the stream broker in batches (:meth:`StreamBroker.read`), as many messages
  as there are free slots plus a bounded prefetch, and starts each in its own asyncio
  task (cancellation relies on that) — no helper tasks, no waits per message;
- calls each middleware hook directly (only the ones a middleware overrides, awaiting
  only the async ones), in TaskIQ's order;
- executes through a per-task :class:`~jobs_service.infrastructure.execution.TaskPlan`;
- frees the slot as soon as the task function returns, so the next message starts
  before this one's bookkeeping;
- saves the result and acknowledges *after* the task and its middlewares ran, batched
  with the other messages that finish within 5 ms while more are running, 1 ms when
  none are (:mod:`~jobs_service.infrastructure.completions`).

Semantics kept from TaskIQ: unparsable messages are acknowledged and skipped; the
``ack_type`` label (when received / executed / saved); ``NoResultError``; ``on_error`` /
``post_execute`` / ``post_save`` hooks; the concurrency limit (``--max-async-tasks``),
``--max-tasks-per-child`` and, on shutdown, no new reads and up to
``--wait-tasks-timeout`` for the running tasks. With a broker that cannot read in
batches it falls back to TaskIQ's loop, still with the faster per-message path.

Changed from TaskIQ: a message of a task this worker does not know is not acknowledged
(TaskIQ drops it) but left for a worker that knows the task, and its run recorded
``dead`` if none did (:mod:`~jobs_service.infrastructure.unknown_tasks`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from typing import TYPE_CHECKING, Any

from taskiq import AckableMessage, TaskiqMiddleware
from taskiq.acks import AckController, AcknowledgeType
from taskiq.exceptions import NoResultError
from taskiq.formatters.proxy_formatter import ProxyFormatter
from taskiq.receiver import Receiver
from taskiq.serializers import ORJSONSerializer

from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.execution import TaskPlan
from jobs_service.infrastructure.redis_broker import Delivery, StreamBroker
from jobs_service.infrastructure.results import PipelinedResultBackend
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.infrastructure.unknown_tasks import settle_unknown_task
from jobs_service.infrastructure.wire import STORE_RESULT_LABEL, decode_message, parse_labels

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from taskiq import AsyncBroker, TaskiqMessage, TaskiqResult

__all__ = ["JobsReceiver"]

_log = get_logger("jobs_service.worker")
_SHUTDOWN_FLUSH_S = 10.0
#: Finished messages waiting for their runs' records at most before the reader pauses:
#: several seconds of a busy worker's flushes, bounded memory in a database outage.
MAX_UNRECORDED = 20_000
_MAX_READ = 500


class _Hook:
    """One middleware's implementation of one hook."""

    __slots__ = ("call", "is_async")

    def __init__(self, call: Callable[..., Any]) -> None:
        self.call = call
        self.is_async = inspect.iscoroutinefunction(call)


def _hooks(middlewares: list[TaskiqMiddleware], name: str) -> list[_Hook]:
    """The hooks ``name`` that middlewares override, in TaskIQ's call order."""
    base = getattr(TaskiqMiddleware, name)
    found = [_Hook(getattr(m, name)) for m in middlewares if getattr(type(m), name) is not base]
    # TaskIQ calls pre_execute in order and everything after the task in reverse.
    return found if name == "pre_execute" else found[::-1]


class JobsReceiver(Receiver):
    """A TaskIQ receiver with batched reads and completions (see the module docstring)."""

    def __init__(self, broker: AsyncBroker, *args: Any, **kwargs: Any) -> None:
        super().__init__(broker, *args, **kwargs)
        # TaskIQ sized its semaphore with a random jitter: its initial value is the
        # concurrency actually in force (None: unlimited).
        self._limit = int(getattr(self.sem, "_value", 0)) or None
        prefetch = int(kwargs.get("max_prefetch") or 0)
        self._prefetch = prefetch
        self._min_read = max(1, min(prefetch, self._limit or prefetch) // 2)
        self._plans: dict[str, TaskPlan] = {}
        self._hook_lists: dict[str, list[_Hook]] | None = None
        self._running: set[asyncio.Task[None]] = set()
        # Messages whose task function has returned, finishing their bookkeeping
        # (middlewares, result, acknowledgement): they no longer hold a slot.
        self._finishing: set[asyncio.Task[None]] = set()
        self._waiting: deque[Delivery] = deque()
        self._room = asyncio.Event()
        self._started = 0
        self._stopping = asyncio.Event()  # set when the worker stops: no more reads
        self._plain_json: bool | None = None
        self._paused = False  # reading paused: too many outcomes not written yet

    @property
    def in_hand(self) -> int:
        """Messages read and not finished: running, or waiting for a slot. At most the
        concurrency plus the prefetch (finished ones stay held until Redis confirms
        their acknowledgement, a few milliseconds)."""
        return len(self._running) + len(self._waiting)

    # ------------------------------------------------------------------ the loop

    async def listen(self, finish_event: asyncio.Event) -> None:
        """Read, start and finish messages until ``finish_event``; then let the running
        ones end (up to ``wait_tasks_timeout``) and confirm their acknowledgements."""
        broker = self.broker
        if not isinstance(broker, StreamBroker):
            await super().listen(finish_event)
            return
        if self.run_startup:
            await broker.startup()
        broker.completions.more_coming = self._more_coming
        runtime = getattr(broker.state, "runtime", None)
        if isinstance(runtime, Runtime):  # its recorder flushes in the lulls between runs
            recorder = runtime.recorder
            recorder.more_coming = self._more_coming
            # A message is acknowledged once its run's outcome is written, not before.
            broker.completions.gate = recorder
            recorder.on_written = self._records_written
        _log.info("worker-listening", concurrency=self._limit, prefetch=self._prefetch)
        reader = asyncio.create_task(self._read_loop(broker), name="jobs-reader")
        stop = asyncio.create_task(finish_event.wait())
        try:
            await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._stopping.set()
            reader.cancel()
            stop.cancel()
            await asyncio.gather(reader, stop, return_exceptions=True)
            # Read but not started: stop renewing them; another worker takes them.
            while self._waiting:
                broker.held.pop(self._waiting.popleft().message_id, None)
            if self._running or self._finishing:
                _log.info("worker-draining", running=len(self._running))
                unfinished = self._running | self._finishing
                await asyncio.wait(unfinished, timeout=self.wait_tasks_timeout)
            await broker.completions.drain(timeout_s=_SHUTDOWN_FLUSH_S)
            if self._running or self._finishing:
                # Runs that outlived the wait keep the gate: one that ends while the
                # process shuts down is acknowledged once its outcome is written, and
                # otherwise stays pending for another worker, never acknowledged bare.
                _log.warning(
                    "worker-runs-unfinished",
                    running=len(self._running | self._finishing),
                    message="acknowledged only once recorded; otherwise run again elsewhere",
                )
            elif isinstance(runtime, Runtime):  # nothing is held back past this point
                broker.completions.gate = None
                runtime.recorder.on_written = None
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()  # type: ignore[misc]
        if self.on_exit is not None:
            self.on_exit(self)

    async def _read_loop(self, broker: StreamBroker) -> None:
        limit = self._limit
        while self.max_tasks_to_execute is None or self._started < self.max_tasks_to_execute:
            if limit is None:
                room = max(self._prefetch, broker.count or 10)
            else:
                room = limit + self._prefetch - len(self._running) - len(self._waiting)
            if self.max_tasks_to_execute is not None:
                room = min(room, self.max_tasks_to_execute - self._started - len(self._waiting))
            # While messages wait to start, read only once there is room for a batch
            # worth a round trip (not one message per finished task).
            if room <= 0 or (self._waiting and room < self._min_read) or self._unrecorded(broker):
                self._room.clear()
                await self._room.wait()
                continue
            batch = await broker.read(min(room, broker.count or _MAX_READ))
            self._waiting.extend(batch)
            # redis-py can lose the cancellation of a blocking read answered at that very
            # moment (redis/redis-py#2028): the read returns instead, and its messages
            # are handed back with the others read but not started.
            if self._stopping.is_set():
                return
            self._start_waiting()
            # Let the runs just started take their first step before the next read goes
            # out: sending it first (a socket write, which wakes Redis on this core) held
            # a run's start back by 50-200 µs, on every run of a worker that keeps up.
            await asyncio.sleep(0)
        _log.info("worker-max-tasks-reached", started=self._started)

    def _records_written(self, written: int) -> None:
        """The recorder wrote up to event ``written``: acknowledge the messages that
        waited for it, and read again if too many waiting had paused the reader."""
        broker = self.broker
        if isinstance(broker, StreamBroker):
            broker.completions.records_written(written)
        self._room.set()

    def _unrecorded(self, broker: StreamBroker) -> bool:
        """Whether so many finished messages wait for their records (the database is
        slow or down) that reading more would only pile up outcomes in memory."""
        if broker.completions.held_back < MAX_UNRECORDED:
            if self._paused:
                self._paused = False
                _log.info("worker-resumed", messages=broker.completions.held_back)
            return False
        if not self._paused:
            self._paused = True
            _log.warning("worker-paused-unrecorded", messages=broker.completions.held_back)
        return True

    def _more_coming(self) -> bool:
        """Whether other messages will finish soon: running, waiting for a slot, or
        finishing besides the one asking."""
        return bool(self._running or self._waiting) or len(self._finishing) > 1

    def _start_waiting(self) -> None:
        limit = self._limit
        while self._waiting and (limit is None or len(self._running) < limit):
            delivery = self._waiting.popleft()
            task = asyncio.get_running_loop().create_task(self._process(delivery))
            self._started += 1
            self._running.add(task)
            task.add_done_callback(self._finished)

    async def _process(self, delivery: Delivery) -> None:
        try:
            await self.callback(delivery)
        except Exception:  # noqa: BLE001 - logged; the message goes round again
            # A middleware failed before the message could be finished: release it, so
            # it is re-delivered after the idle timeout (and dead-lettered if it keeps
            # failing) rather than renewed forever.
            _log.exception("message-not-finished", message_id=delivery.message_id)
            delivery.release()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._finishing.discard(task)
        self._slot_freed()

    def _slot_freed(self) -> None:
        """Start the next waiting message, and wake the reader (there may be room)."""
        if self._waiting:
            self._start_waiting()
        self._room.set()

    async def _hand_back_slot(self) -> None:
        """The task function has returned: free its slot now and let the next message
        start before this one's bookkeeping runs.

        When many tasks end together (a wave of equal sleeps), starting each next one
        only after the previous one's middlewares, result and acknowledgement would
        delay the last start of the wave by the whole wave's bookkeeping, wave after
        wave. A slot bounds the task functions running at once; bookkeeping is the
        service's, and does not hold one.
        """
        task = asyncio.current_task()
        if task is None or task not in self._running:
            return
        self._running.discard(task)
        self._finishing.add(task)
        self._slot_freed()
        await asyncio.sleep(0)

    # ------------------------------------------------------------- one message

    async def callback(  # noqa: PLR0912 - TaskIQ's callback, step by step
        self, message: bytes | AckableMessage | Delivery, raise_err: bool = False
    ) -> None:
        """Decode, run the middlewares and the task, save the result, acknowledge."""
        delivery = message if isinstance(message, Delivery) else None
        ack: Callable[[], Awaitable[None] | None] | None = None
        if isinstance(message, (Delivery, AckableMessage)):
            data, ack = message.data, message.ack
        else:
            data = message
        ack_controller = AckController(ack)
        try:
            taskiq_msg = self._decode(data)
        except Exception as exc:  # noqa: BLE001 - a bad message is skipped, not fatal
            _log.warning("message-unreadable", error=str(exc)[:300], data=bytes(data[:200]))
            if ack is not None:
                await ack_controller.ack()
            return
        plan = self._plan(taskiq_msg.task_name)
        if plan is None:
            if delivery is not None:  # left for a worker that knows it, or dead at last
                await settle_unknown_task(delivery, taskiq_msg)
                return
            # Only a broker Jobs Service does not ship gets here: the in-memory broker
            # refuses to send an unknown task, and the stream broker reads Deliveries.
            _log.warning("task-unknown", task_name=taskiq_msg.task_name)
            if ack is not None:
                await ack_controller.ack()
            return
        hooks = self._hooks()
        for hook in hooks["pre_execute"]:
            changed = hook.call(taskiq_msg)
            taskiq_msg = await changed if hook.is_async or inspect.isawaitable(changed) else changed
        ack_time = self._get_ack_time(taskiq_msg)
        if ack_time == AcknowledgeType.WHEN_RECEIVED and ack is not None:
            await ack_controller.ack()

        result = await plan.run(
            self.broker,
            taskiq_msg,
            ack_controller,
            executor=self.executor,
            propagate_exceptions=self.propagate_exceptions,
        )
        if delivery is not None:
            await self._hand_back_slot()
        if result.is_err and result.error is not None:
            for hook in hooks["on_error"]:
                await _call(hook, taskiq_msg, result, result.error)

        if ack_time == AcknowledgeType.WHEN_EXECUTED and ack is not None:
            await ack_controller.ack()
        for hook in hooks["post_execute"]:  # inline: this loop runs for every message
            returned = hook.call(taskiq_msg, result)
            if hook.is_async or (returned is not None and inspect.isawaitable(returned)):
                await returned

        # Runs sent through Jobs Service keep their outcome in the run history; only a
        # message that does not say otherwise (a plain ``kiq()``) gets TaskIQ's result.
        saves = not isinstance(result.error, NoResultError) and (
            taskiq_msg.labels.get(STORE_RESULT_LABEL) is not False
        )
        if (
            delivery is not None
            and ack_time == AcknowledgeType.WHEN_SAVED
            and not ack_controller.is_acked
            and not (saves and hooks["post_save"])
        ):
            delivery.finish(self._result_entry(taskiq_msg, result) if saves else None)
            return
        try:
            if saves:
                await self.broker.result_backend.set_result(taskiq_msg.task_id, result)
                for hook in hooks["post_save"]:
                    await _call(hook, taskiq_msg, result)
        except Exception:
            _log.exception("result-not-saved", run_id=taskiq_msg.task_id)
            if raise_err:
                raise
        if ack_time == AcknowledgeType.WHEN_SAVED and ack is not None:
            await ack_controller.ack()

    def _decode(self, data: bytes) -> TaskiqMessage:
        if self._plain_json is None:
            broker = self.broker
            self._plain_json = isinstance(broker.formatter, ProxyFormatter) and isinstance(
                broker.serializer, ORJSONSerializer
            )
        if self._plain_json:
            message = decode_message(data)
            if message is not None:
                parse_labels(message)
                return message
        message = self.broker.formatter.loads(message=data)
        message.parse_labels()
        return message

    def _result_entry(
        self, message: TaskiqMessage, result: TaskiqResult[Any]
    ) -> tuple[str, bytes, int | None] | None:
        backend = self.broker.result_backend
        if isinstance(backend, PipelinedResultBackend):
            try:
                return backend.entry(message.task_id, result)
            except Exception:  # noqa: BLE001 - an unencodable result must not block the ack
                _log.exception("result-not-saved", run_id=message.task_id)
        return None

    def _plan(self, task_name: str) -> TaskPlan | None:
        """The plan of the function registered under ``task_name`` now. A plan is kept
        while its function stays registered: a task registered again under the same
        name (a reload, a test's stand-in) gets a new plan, never the old function."""
        task = self.broker.find_task(task_name)
        if task is None:
            return None
        plan = self._plans.get(task_name)
        if plan is None or plan.target is not task.original_func:
            plan = TaskPlan(task.original_func, validate_params=self.validate_params)
            self._plans[task_name] = plan
        return plan

    def _hooks(self) -> dict[str, list[_Hook]]:
        if self._hook_lists is None:
            middlewares = self.broker.middlewares
            self._hook_lists = {
                name: _hooks(middlewares, name)
                for name in ("pre_execute", "on_error", "post_execute", "post_save")
            }
        return self._hook_lists

    async def run_task(
        self,
        target: Callable[..., Any],
        message: TaskiqMessage,
        ack_controller: AckController | None = None,
    ) -> TaskiqResult[Any]:
        """TaskIQ's entry point for running one message's task (used by tests)."""
        plan = self._plan(message.task_name) or TaskPlan(
            target, validate_params=self.validate_params
        )
        return await plan.run(
            self.broker,
            message,
            ack_controller or AckController(None),
            executor=self.executor,
            propagate_exceptions=self.propagate_exceptions,
        )


async def _call(hook: _Hook, *args: Any) -> None:
    returned = hook.call(*args)
    if hook.is_async or (returned is not None and inspect.isawaitable(returned)):
        await returned
