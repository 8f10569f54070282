"""The FastAPI application factory and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from taskiq import InMemoryBroker
from taskiq_fastapi import populate_dependency_context

from jobs_service import __version__
from jobs_service.client import JobsClient
from jobs_service.core.errors import ConfigurationError
from jobs_service.core.logging import get_logger
from jobs_service.core.redaction import redact_url, treat_as_sensitive
from jobs_service.core.settings import Settings
from jobs_service.gateway.audit import AuditMiddleware
from jobs_service.gateway.body_limit import BodyLimitMiddleware
from jobs_service.gateway.problems import install_problem_handlers
from jobs_service.gateway.request_log import RequestLogMiddleware
from jobs_service.gateway.routes import (
    audit,
    health,
    runs,
    schedules,
    tasks,
    webhook_events,
    webhooks,
)
from jobs_service.gateway.security_headers import SecurityHeadersMiddleware
from jobs_service.gateway.webhook_fast_path import WebhookFastPath
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.embedded_lock import EmbeddedLock, process_gone
from jobs_service.infrastructure.repositories import runs as runs_repo
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.webhooks.inbox import WebhookInbox
from jobs_service.webhooks.schemes import build_webhook_schemes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from taskiq import AsyncBroker

    from jobs_service.core.settings import WebhookSource

__all__ = ["build_webhook_schemes", "check_gateway_security", "check_webhook_routes", "create_app"]

_log = get_logger("jobs_service.gateway")
#: The embedded scheduler's restart backoff after a failure: first and longest wait (s).
SCHEDULER_RETRY_S = (1.0, 30.0)


def check_gateway_security(settings: Settings) -> None:
    """Refuse configurations that would expose an unauthenticated API or webhook."""
    if settings.env == "production":
        unverified = [
            name for name, source in settings.webhooks.sources.items() if source.scheme == "none"
        ]
        if unverified:
            msg = (
                f"webhooks.sources.{unverified[0]}: scheme 'none' (no signature check) "
                "is not allowed with JOBS_ENV=production; refusing to start"
            )
            raise ConfigurationError(msg)
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
    # A signature header may be named anything (X-Acme-Auth): redacted like the rest.
    treat_as_sensitive(
        source.signature_header
        for source in settings.webhooks.sources.values()
        if source.signature_header
    )
    if broker is None:
        from jobs_service.broker import broker as shared_broker  # noqa: PLC0415 - cycle

        broker = shared_broker
    target: AsyncBroker = broker

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        serving = not target.is_worker_process
        runtime = await _start_runtime(app, settings, target, serving=serving, embedded=embedded)
        in_process_scheduler = embedded if scheduler is None else scheduler
        background = [
            task
            for task in (
                _start_scheduler(target) if in_process_scheduler else None,
                _start_relay(app.state.webhook_inbox, settings)
                if serving and settings.webhooks.sources
                else None,
            )
            if task is not None
        ]
        if announce:
            _announce(settings, serving=serving, embedded=embedded)
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                # Each loop logs its own failures; none may keep the broker and the
                # runtime from shutting down.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
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
    # Webhooks first: routes are matched in order, and senders are the busiest callers.
    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(tasks.router)
    app.include_router(runs.router)
    app.include_router(schedules.router)
    app.include_router(webhook_events.router)
    app.include_router(audit.router)
    _add_middlewares(app, settings)
    return app


def _add_middlewares(app: FastAPI, settings: Settings) -> None:
    """Outermost last: headers on every answer (413s and CORS refusals included), CORS
    before anything reads the request, the audit around the request log (it reads the
    request id and principal once the response is out), body limits, then innermost
    the webhook route's fast path (after every check above, before FastAPI's router)."""
    app.add_middleware(WebhookFastPath)
    app.add_middleware(
        BodyLimitMiddleware,
        api_limit=settings.api.max_body_bytes,
        source_limits={
            name: source.max_body_bytes for name, source in settings.webhooks.sources.items()
        },
    )
    app.add_middleware(RequestLogMiddleware, enabled=settings.api.request_log)
    app.add_middleware(AuditMiddleware)
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        )
    docs = (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(
        SecurityHeadersMiddleware,
        hsts=settings.api.hsts,
        docs_paths=[path for path in docs if path],
    )


async def _start_runtime(
    app: FastAPI, settings: Settings, broker: AsyncBroker, *, serving: bool, embedded: bool
) -> Runtime:
    """Check the configuration, build the runtime and the objects routes use, start the
    broker (unless a TaskIQ worker owns it)."""
    if serving:
        check_gateway_security(settings)
        check_webhook_routes(settings, broker)
    runtime = Runtime(settings)
    lock = None
    if serving and isinstance(broker, InMemoryBroker):  # runs tasks on this database
        lock = runtime.resource("embedded-lock", lambda: EmbeddedLock(settings.database_url))
    if embedded:
        await migrate.upgrade(runtime.database)
        await _sweep_interrupted(runtime, lock)
    if lock is not None:
        lock.share()
    await runtime.start()
    app.state.runtime = runtime
    app.state.client = JobsClient(broker, runtime)
    app.state.webhook_schemes = build_webhook_schemes(settings)
    # A runtime resource, so stopping the runtime writes its pending `enqueued` marks.
    app.state.webhook_inbox = runtime.resource(
        "webhook-inbox",
        lambda: WebhookInbox(
            runtime.database,
            app.state.client,
            relay_after_s=settings.webhooks.relay_after_s,
            sources=settings.webhooks.sources,
            send_timeout_s=settings.webhooks.send_timeout_s,
        ),
    )
    broker.state.runtime = runtime
    if serving:
        await broker.startup()
        if isinstance(broker, InMemoryBroker):
            populate_dependency_context(broker, app)
    return runtime


def _announce(settings: Settings, *, serving: bool, embedded: bool) -> None:
    if serving and not settings.api_keys:
        _log.warning(
            "no-api-keys",
            message="no [[api_keys]] configured: serving loopback callers only, "
            "without authentication",
        )
    if not serving:  # a worker process, which builds the app for its dependencies
        return
    _log.info(
        "gateway-started",
        version=__version__,
        embedded=embedded,
        database=redact_url(settings.database_url),
        broker="in-memory" if settings.redis_url is None else redact_url(settings.redis_url),
    )


def check_webhook_routes(settings: Settings, broker: AsyncBroker) -> None:
    """Every task a webhook route leads to must exist: a typo would fail every event.

    That includes the implicit default, ``process_webhook_event``, for sources without a
    ``default_task``. The message says what leads to the task, and only the implicit
    default gets the hint to set ``default_task``.
    """
    registered = broker.get_all_tasks()
    for name, source in settings.webhooks.sources.items():
        for task, why in _routed_tasks(source):
            if task not in registered:
                close = difflib.get_close_matches(task, list(registered), n=1)
                guess = f"; did you mean {close[0]!r}?" if close else ""
                msg = (
                    f"webhooks.sources.{name}: route task {task!r} is not registered "
                    f"({why}{guess}); refusing to start"
                )
                raise ConfigurationError(msg)


def _routed_tasks(source: WebhookSource) -> Iterator[tuple[str, str]]:
    """Each task a source's events can go to, with what sends them there."""
    event_types: dict[str, list[str]] = {}
    for event_type, route in source.routes.items():
        task = route if isinstance(route, str) else route.task
        event_types.setdefault(task, []).append(repr(event_type))
    for task, types in event_types.items():
        plural = "s" if len(types) > 1 else ""
        yield task, f"event type{plural} {', '.join(types)} route{'' if plural else 's'} there"
    if source.default_task is not None:
        yield source.default_task, "the source's default_task"
    else:
        implicit = source.route_for(None).task
        yield implicit, "events without a route go there; set default_task for this source"


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


def _start_relay(inbox: WebhookInbox, settings: Settings) -> asyncio.Task[None]:
    """Enqueue events accepted while the broker was down, once it is back."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(settings.webhooks.relay_after_s)
            try:
                await inbox.relay()
            except Exception as exc:  # noqa: BLE001 - the relay must outlive any one failure
                _log.warning(
                    "webhook-relay-failed", error_type=type(exc).__name__, error=str(exc)[:300]
                )

    return asyncio.create_task(loop(), name="webhook-relay")


async def _sweep_interrupted(runtime: Runtime, lock: EmbeddedLock | None) -> None:
    """The in-memory broker forgets its queue when the process ends: runs an earlier
    embedded process left queued or running will never finish, so say so. While
    another process runs tasks on the same file (``jobsctl enqueue``), only the runs of
    processes that are gone (see :mod:`~jobs_service.infrastructure.embedded_lock`)."""
    error = {
        "type": "Interrupted",
        "message": "the embedded process stopped before this run finished",
    }
    alone = lock is None or lock.take_alone()  # the caller shares it afterwards
    async with runtime.database.engine.begin() as connection:
        run_ids, left = None, 0
        if not alone:
            unfinished = await runs_repo.unfinished_workers(connection)
            run_ids = [
                run_id
                for run_id, status, worker in unfinished
                # A queued run is the queuing process's, which the history does not
                # name (an operator's retry keeps the last attempt's worker).
                if status != "queued" and worker is not None and process_gone(worker)
            ]
            left = len(unfinished) - len(run_ids)
        count = await runs_repo.fail_unfinished(
            connection, before=datetime.now(UTC), error=error, run_ids=run_ids
        )
    if count:
        _log.warning("runs-interrupted", count=count)
    if left:
        _log.info(
            "runs-left-unfinished",
            count=left,
            reason="another process runs tasks on this database; queued runs and runs "
            "of live processes are its to finish",
        )


def _start_scheduler(broker: AsyncBroker) -> asyncio.Task[None]:
    """The scheduler loop inside the embedded process (same broker, same runtime).

    A loop that fails (its start could not reach the database, say) is started again
    after a backoff, as a supervisor would restart ``jobsctl scheduler``: an embedded
    process has no supervisor for its scheduler but itself.
    """
    from jobs_service.scheduler.loop import run_scheduler_loop  # noqa: PLC0415 - embedded only
    from jobs_service.scheduler.source import JobsScheduler  # noqa: PLC0415

    async def supervise() -> None:
        first, most = SCHEDULER_RETRY_S
        delay = first
        clock = asyncio.get_running_loop().time
        while True:
            began = clock()
            try:
                await run_scheduler_loop(JobsScheduler(broker, manage_broker=False))
            except Exception as exc:  # noqa: BLE001 - logged; started again below
                if clock() - began > most:  # it had been running: a new failure
                    delay = first
                _log.error(
                    "scheduler-failed",
                    error_type=type(exc).__name__,
                    error=str(exc)[:300],
                    retry_in_s=delay,
                    exc_info=exc,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, most)

    return asyncio.create_task(supervise(), name="scheduler-loop")
