"""The FastAPI application factory and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import FastAPI
from taskiq import InMemoryBroker
from taskiq_fastapi import populate_dependency_context

from jobs_service import __version__
from jobs_service.client import JobsClient
from jobs_service.core.errors import ConfigurationError
from jobs_service.core.logging import get_logger
from jobs_service.core.redaction import redact_url
from jobs_service.core.settings import Settings
from jobs_service.gateway.problems import install_problem_handlers
from jobs_service.gateway.request_log import RequestLogMiddleware
from jobs_service.gateway.routes import health, runs, schedules, tasks
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.repositories import runs as runs_repo
from jobs_service.infrastructure.runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from taskiq import AsyncBroker

__all__ = ["check_gateway_security", "create_app"]

_log = get_logger("jobs_service.gateway")


def check_gateway_security(settings: Settings) -> None:
    """Refuse configurations that would expose an unauthenticated API."""
    if settings.api_keys:
        return
    if settings.env == "production":
        msg = (
            "JOBS_ENV=production requires at least one [[api_keys]] entry "
            "in the config file; refusing to start"
        )
        raise ConfigurationError(msg)


def create_app(
    settings: Settings | None = None,
    *,
    broker: AsyncBroker | None = None,
    embedded: bool = False,
    scheduler: bool | None = None,
    announce: bool = True,
) -> FastAPI:
    """Build the gateway.

    ``embedded`` is ``jobsctl run``: the schema is migrated at start and the scheduler
    loop runs inside the process (``scheduler=False`` leaves it out). ``announce=False``
    keeps one-shot CLI commands quiet about serving. Called with no arguments (as
    taskiq-fastapi does in workers) it reads settings from the environment and uses the
    shared broker.
    """
    settings = settings or Settings.load()
    if broker is None:
        from jobs_service.broker import broker as shared_broker  # noqa: PLC0415 - cycle

        broker = shared_broker
    target: AsyncBroker = broker

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        serving = not target.is_worker_process
        if serving:
            check_gateway_security(settings)
        runtime = Runtime(settings)
        if embedded:
            await migrate.upgrade(runtime.database)
            await _sweep_interrupted(runtime)
        await runtime.start()
        app.state.runtime = runtime
        app.state.client = JobsClient(target, runtime)
        target.state.runtime = runtime
        if serving:
            await target.startup()
            if isinstance(target, InMemoryBroker):
                populate_dependency_context(target, app)
        in_process_scheduler = embedded if scheduler is None else scheduler
        scheduler_task = _start_scheduler(target) if in_process_scheduler else None
        if serving and announce and not settings.api_keys:
            _log.warning(
                "no-api-keys",
                message="no [[api_keys]] configured: serving loopback callers only, "
                "without authentication",
            )
        if announce:
            _log.info(
                "gateway-started",
                version=__version__,
                embedded=embedded,
                database=redact_url(settings.database_url),
                broker="in-memory"
                if settings.redis_url is None
                else redact_url(settings.redis_url),
            )
        try:
            yield
        finally:
            if scheduler_task is not None:
                scheduler_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await scheduler_task
            if serving:
                if isinstance(target, InMemoryBroker):
                    await _drain(target, settings.worker.shutdown_timeout_s)
                await target.shutdown()
            await runtime.stop()

    app = FastAPI(
        title="Jobs Service",
        version=__version__,
        description="Background jobs: cron, webhook-triggered and ad hoc, with history.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.broker = target
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(tasks.router)
    app.include_router(runs.router)
    app.include_router(schedules.router)
    app.add_middleware(RequestLogMiddleware, enabled=settings.api.request_log)
    return app


async def _drain(broker: InMemoryBroker, timeout_s: float) -> None:
    """Let in-process runs finish within ``timeout_s``; cancel the rest.

    A cancelled run is recorded ``failed`` with ``CancelledError`` before the recorder's
    final flush, so nothing is left ``running`` by a clean shutdown.
    """
    running = set(broker._running_tasks)  # TaskIQ exposes no public view of them
    if not running:
        return
    _, pending = await asyncio.wait(running, timeout=timeout_s)
    if pending:
        _log.warning("shutdown-timeout", cancelled=len(pending), timeout_s=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=5)


async def _sweep_interrupted(runtime: Runtime) -> None:
    """The in-memory broker forgets its queue when the process ends: runs an earlier
    embedded process left queued or running will never finish, so say so."""
    async with runtime.database.engine.begin() as connection:
        count = await runs_repo.fail_unfinished(
            connection,
            before=datetime.now(UTC),
            error={
                "type": "Interrupted",
                "message": "the embedded process stopped before this run finished",
            },
        )
    if count:
        _log.warning("runs-interrupted", count=count)


def _start_scheduler(broker: AsyncBroker) -> asyncio.Task[None]:
    """The scheduler loop inside the embedded process (same broker, same runtime)."""
    from taskiq.cli.scheduler.run import SchedulerLoop  # noqa: PLC0415 - embedded only

    from jobs_service.scheduler.source import JobsScheduler  # noqa: PLC0415

    scheduler = JobsScheduler(broker, manage_broker=False)

    async def loop() -> None:
        await scheduler.startup()
        try:
            await SchedulerLoop(scheduler).run()
        finally:
            await scheduler.shutdown()

    return asyncio.create_task(loop(), name="scheduler-loop")
