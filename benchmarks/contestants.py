"""The two contestants of the side-by-side workloads (W1-W3): plain TaskIQ and Jobs.

Parent side, :func:`taskiq_resources` and :func:`jobs_resources` give one repetition of
a contestant its own Redis key prefix (and, for Jobs, its own PostgreSQL database) and
remove them afterwards; they yield the environment of the measurement child. Child
side, :func:`taskiq_producer` / :func:`jobs_producer` open the contestant's producer,
:func:`taskiq_worker` / :func:`jobs_worker` start its one worker process, and
:func:`warm_up` runs a few tasks through it before any clock starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchmarks.processes import executable, start_process, wait_for_counter
from benchmarks.services import REDIS_URL, clean_redis, create_database, drop_database

if TYPE_CHECKING:
    import subprocess
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
    from pathlib import Path
    from types import ModuleType

    from redis.asyncio import Redis
    from taskiq import AsyncTaskiqDecoratedTask

    from jobs_service.client import JobsClient
    from jobs_service.infrastructure.runtime import Runtime

__all__ = [
    "TASKIQ_APP",
    "JobsProducer",
    "jobs_producer",
    "jobs_resources",
    "jobs_worker",
    "kiq_all",
    "taskiq_producer",
    "taskiq_resources",
    "taskiq_worker",
    "warm_jobs",
    "warm_taskiq",
    "warm_up",
    "warm_wave",
]

TASKIQ_APP = "benchmarks.plain_taskiq_app:broker"
JOBS_TASK_MODULES = "benchmarks.tasks"


# ------------------------------------------------------------------ parent side


@contextlib.contextmanager
def taskiq_resources(workload: str) -> Iterator[dict[str, str]]:
    """A fresh key prefix for plain TaskIQ; every key under it is deleted afterwards."""
    prefix = f"{workload}-taskiq-{uuid.uuid4().hex[:8]}"
    try:
        yield {"TASKIQ_BENCH_PREFIX": prefix, "TASKIQ_BENCH_REDIS_URL": REDIS_URL}
    finally:
        asyncio.run(clean_redis(prefix))


@contextlib.contextmanager
def jobs_resources(workload: str, *, log_level: str = "info") -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database and key prefix for Jobs; dropped afterwards.

    ``log_level`` ``info`` (the default) keeps the lifecycle log line of every run: the
    full middleware stack, as in production.
    """
    name = f"jobs_{workload}_{uuid.uuid4().hex[:8]}"
    prefix = f"{workload}-jobs-{uuid.uuid4().hex[:8]}"
    url = asyncio.run(create_database(name))
    try:
        yield {
            "JOBS_DATABASE_URL": url,
            "JOBS_REDIS_URL": REDIS_URL,
            "JOBS_REDIS_PREFIX": prefix,
            "JOBS_TASK_MODULES": JOBS_TASK_MODULES,
            "JOBS_LOG_FORMAT": "json",
            "JOBS_LOG_LEVEL": log_level,
        }
    finally:
        asyncio.run(drop_database(name))
        asyncio.run(clean_redis(prefix))


# ------------------------------------------------------------------- child side


def taskiq_worker(log: Path, *, max_async_tasks: int | None = None) -> subprocess.Popen[bytes]:
    """``taskiq worker benchmarks.plain_taskiq_app:broker --workers 1`` (defaults
    otherwise, unless ``max_async_tasks`` is given)."""
    command = [executable("taskiq"), "worker", TASKIQ_APP, "--workers", "1"]
    if max_async_tasks is not None:
        command += ["--max-async-tasks", str(max_async_tasks)]
    return start_process(command, {}, log)


def jobs_worker(log: Path, *, concurrency: int = 100) -> subprocess.Popen[bytes]:
    """``jobsctl worker --processes 1 --concurrency N``."""
    command = [executable("jobsctl"), "worker", "--processes", "1"]
    return start_process([*command, "--concurrency", str(concurrency)], {}, log)


def settle_producer_heap() -> None:
    """Freeze what a producer holds after start-up, for both contestants alike.

    A producer process is a service that has just started (Jobs' own gateway does this
    after start-up, see ``jobs_service.infrastructure.heap``). Without it, the first
    batch that keeps a thousand runs alive sets off a full collection of everything
    imported: about 100 ms in which the producer sends nothing (seen as W3's first run
    starting 100 ms after the clock).
    """
    from jobs_service.infrastructure.heap import settle_heap  # noqa: PLC0415

    settle_heap()


@contextlib.asynccontextmanager
async def taskiq_producer() -> AsyncIterator[ModuleType]:
    """The plain TaskIQ app, its broker started (the consumer group exists before the
    first send); yields the module, whose tasks have ``kiq()``."""
    from benchmarks import plain_taskiq_app  # noqa: PLC0415 - reads the child's environment

    await plain_taskiq_app.broker.startup()
    settle_producer_heap()
    try:
        yield plain_taskiq_app
    finally:
        await plain_taskiq_app.broker.shutdown()


@dataclass(frozen=True, slots=True)
class JobsProducer:
    """What a Jobs measurement child uses: the client, its runtime, the key prefix."""

    client: JobsClient
    runtime: Runtime
    prefix: str

    async def succeeded(self, task: str) -> int:
        """How many runs of ``task`` are recorded ``succeeded``."""
        from sqlalchemy import func, select  # noqa: PLC0415

        from jobs_service.infrastructure.models import JobRun  # noqa: PLC0415

        query = (
            select(func.count())
            .select_from(JobRun)
            .where(JobRun.task == task, JobRun.status == "succeeded")
        )
        async with self.runtime.database.sessions() as session:
            return int((await session.execute(query)).scalar_one())


@contextlib.asynccontextmanager
async def jobs_producer() -> AsyncIterator[JobsProducer]:
    """The schema migrated, the shared broker started, a :class:`JobsClient` on it."""
    from jobs_service.broker import broker  # noqa: PLC0415 - reads the child's environment
    from jobs_service.client import JobsClient  # noqa: PLC0415
    from jobs_service.core.settings import Settings  # noqa: PLC0415
    from jobs_service.infrastructure import migrate  # noqa: PLC0415
    from jobs_service.infrastructure.runtime import Runtime  # noqa: PLC0415

    settings = Settings.load()
    runtime = Runtime(settings)
    await migrate.upgrade(runtime.database)
    broker.state.runtime = runtime
    await broker.startup()
    settle_producer_heap()
    try:
        yield JobsProducer(JobsClient(broker, runtime), runtime, settings.redis_prefix)
    finally:
        await broker.shutdown()
        await runtime.stop()


async def kiq_all(
    task: AsyncTaskiqDecoratedTask[..., Any], kwargs: Iterable[dict[str, Any]], in_flight: int
) -> None:
    """Send one ``kiq()`` per kwargs mapping with ``in_flight`` sends outstanding."""
    remaining = iter(kwargs)

    async def sender() -> None:
        for item in remaining:  # a shared iterator: each sender takes the next one
            await task.kiq(**item)

    await asyncio.gather(*(sender() for _ in range(in_flight)))


async def warm_up(
    redis: Redis, key: str, send: Callable[[str], Awaitable[object]], runs: int = 20
) -> None:
    """Send ``runs`` counter bumps on ``key`` through ``send(key)`` and wait for them:
    the worker has imported, connected and run its first tasks before the clock."""
    for _ in range(runs):
        await send(key)
    await wait_for_counter(redis, key, runs, timeout_s=60)


async def warm_wave(
    redis: Redis, key: str, send_all: Callable[[list[dict[str, Any]]], Awaitable[object]], size: int
) -> None:
    """Run one full wave: ``size`` runs of ``sleep_then_count`` (50 ms) sent at once,
    so ``size`` tasks hold their slots together and then bump ``key`` together.

    Both contestants' task bodies share a per-process Redis client whose pool grows
    one connection per concurrent command; opening a hundred costs about 90 ms, once.
    Paid here, before the clock, it is not billed to whichever run happens to be
    first, for either contestant.
    """
    await send_all([{"key": key, "seconds": 0.05}] * size)
    await wait_for_counter(redis, key, size, timeout_s=60)


async def warm_taskiq(redis: Redis, app: ModuleType, wave: int, runs: int = 20) -> None:
    """Plain TaskIQ's warm-up: ``runs`` counter bumps, then one wave of ``wave`` tasks."""
    await warm_up(redis, f"{app.PREFIX}:warm", app.bump_counter.kiq, runs=runs)
    await warm_wave(
        redis,
        f"{app.PREFIX}:wave",
        lambda items: kiq_all(app.sleep_then_count, items, len(items)),
        wave,
    )


async def warm_jobs(redis: Redis, jobs: JobsProducer, wave: int, runs: int = 20) -> None:
    """Jobs Service's warm-up: ``runs`` counter bumps, then one wave of ``wave`` tasks."""
    client = jobs.client
    await warm_up(
        redis,
        f"{jobs.prefix}:warm",
        lambda key: client.enqueue("bump_counter", {"key": key}),
        runs=runs,
    )
    await warm_wave(
        redis,
        f"{jobs.prefix}:wave",
        lambda items: client.enqueue_many("sleep_then_count", items),
        wave,
    )
