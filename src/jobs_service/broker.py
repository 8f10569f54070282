"""*The* broker, built from settings: ``taskiq worker jobs_service.broker:broker``.

``JOBS_REDIS_URL`` set: a Redis stream broker (acknowledged delivery: a message is
acknowledged only after its task ran, so a crashed worker's messages are re-delivered)
with a Redis result backend for messages that keep a TaskIQ result. Unset: TaskIQ's in-memory
broker, which runs tasks inside the process that enqueued them (the embedded default).

Both use orjson on the wire, never pickle: a message is data any producer can write and
no consumer executes. Importing this module imports every task module; one that fails to
import fails the process at start, loudly, instead of failing its runs later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import taskiq_fastapi
from taskiq import AsyncBroker, InMemoryBroker, TaskiqEvents, TaskiqState
from taskiq.serializers import ORJSONSerializer

from jobs_service.core.logging import configure_logging, flush_logs
from jobs_service.core.settings import Settings
from jobs_service.infrastructure.heap import settle_heap
from jobs_service.infrastructure.receiver import JobsReceiver
from jobs_service.infrastructure.redis_broker import StreamBroker
from jobs_service.infrastructure.results import PipelinedResultBackend
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.infrastructure.stream_upkeep import StreamUpkeep
from jobs_service.middlewares import default_middlewares
from jobs_service.middlewares.cancellation import watch_cancellations

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["broker", "build_broker", "settings", "stream_names"]


def stream_names(settings: Settings) -> dict[str, str]:
    """Redis key names derived from ``redis_prefix``."""
    prefix = settings.redis_prefix
    return {
        "stream": f"{prefix}:tasks",
        "group": f"{prefix}:workers",
        "results": f"{prefix}:results",
    }


def build_broker(settings: Settings) -> AsyncBroker:
    """A new broker for ``settings`` with the Jobs Service middleware stack."""
    new_broker: AsyncBroker
    if settings.redis_url is None:
        in_memory = InMemoryBroker(
            max_async_tasks=settings.worker.concurrency, max_stored_results=1000
        )
        # The embedded mode runs tasks through the same receiver as the workers.
        in_memory.receiver = JobsReceiver(
            in_memory, executor=in_memory.executor, max_async_tasks=settings.worker.concurrency
        )
        new_broker = in_memory
    else:
        names = stream_names(settings)
        options = settings.broker
        new_broker = StreamBroker(
            url=settings.redis_url,
            queue_name=names["stream"],
            consumer_group_name=names["group"],
            consumer_id="0",  # a new group starts at the stream's beginning: nothing queued
            # before the first worker started is skipped
            xread_count=options.xread_count,
            xread_block=options.xread_block_ms,
            idle_timeout=int(options.idle_timeout_s * 1000),
            reclaim_interval_s=options.reclaim_interval_s,
            sent_marker_ttl_s=options.sent_marker_ttl_s,
            max_connection_pool_size=options.max_connections,
            health_check_interval=30,
            socket_keepalive=True,
            # A connection dropped without a reset (a crashed host, a partition) must
            # fail a read in seconds, not after the kernel's two-hour keepalive.
            socket_timeout=options.xread_block_ms / 1000 + 5,
            socket_connect_timeout=5,
            retry_on_timeout=True,
        ).with_result_backend(
            PipelinedResultBackend(
                redis_url=settings.redis_url,
                result_ex_time=options.result_ttl_s,
                serializer=ORJSONSerializer(),
                prefix_str=names["results"],
                max_connection_pool_size=options.max_connections,
            )
        )
    new_broker = new_broker.with_serializer(ORJSONSerializer())
    new_broker.add_middlewares(*default_middlewares())
    if isinstance(new_broker, StreamBroker):
        stream_broker = new_broker
        # First: forked worker processes must not share the parent's consumer name.
        new_broker.add_event_handler(
            TaskiqEvents.WORKER_STARTUP, lambda _: stream_broker.name_this_process()
        )
    new_broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, _logging_setup(settings))
    # The gateway's lifespan runs first in workers and attaches the Runtime (one wiring
    # for routes and tasks); the handlers after it only cover a missing one.
    taskiq_fastapi.init(new_broker, "jobs_service.gateway.app:create_app")
    new_broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, _ensure_runtime)
    new_broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, _stop_own_runtime)
    if isinstance(new_broker, StreamBroker):
        upkeep = StreamUpkeep(
            new_broker, prefix=settings.redis_prefix, max_lease_s=settings.broker.max_lease_s
        )
        new_broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, lambda _: upkeep.start())
        new_broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, lambda _: upkeep.stop())
    watch_cancellations(new_broker, settings.redis_prefix)  # workers learn cancellations
    # Last: everything start-up built is long-lived from here on.
    new_broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, lambda _: settle_heap())
    # Last on the way out: forked worker processes exit without running atexit.
    new_broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, lambda _: flush_logs())
    return new_broker


def _logging_setup(config: Settings) -> Callable[[TaskiqState], None]:
    def configure(state: TaskiqState) -> None:
        # Workers started by `taskiq worker` get TaskIQ's plain logging; switch to ours.
        del state
        configure_logging(config.log_format, config.log_level)

    return configure


async def _ensure_runtime(state: TaskiqState) -> None:
    if getattr(state, "runtime", None) is None:
        runtime = Runtime(Settings.load())
        await runtime.start()
        state.runtime = runtime
        state.owns_runtime = True


async def _stop_own_runtime(state: TaskiqState) -> None:
    if getattr(state, "owns_runtime", False):
        await state.runtime.stop()
        state.owns_runtime = False


settings = Settings.load()
broker = build_broker(settings)

from jobs_service.tasks import load_task_modules  # noqa: E402 - tasks register on `broker`

load_task_modules(settings.task_modules, broker=broker)
