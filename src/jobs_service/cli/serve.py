"""Long-running processes: ``run``, ``api``, ``worker``, ``scheduler``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

from jobs_service.cli.context import shared_broker
from jobs_service.cli.errors import EXIT_FAILED, CliError
from jobs_service.core.settings import is_loopback_host

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Coroutine

    from jobs_service.core.settings import Settings

__all__ = ["api", "exit_on_sigterm", "run", "scheduler", "worker"]


def _bind(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    host = args.host or settings.api.host
    port = args.port or settings.api.port
    if not settings.api_keys and not is_loopback_host(host):
        raise CliError(
            f"no [[api_keys]] configured: refusing to listen on {host}; "
            "configure API keys or bind a loopback address such as 127.0.0.1"
        )
    return host, port


def _serve(args: argparse.Namespace, settings: Settings, *, embedded: bool) -> int:
    import uvicorn  # noqa: PLC0415

    from jobs_service.core.errors import ConfigurationError  # noqa: PLC0415
    from jobs_service.gateway.app import (  # noqa: PLC0415
        check_gateway_security,
        check_webhook_routes,
        create_app,
    )
    from jobs_service.gateway.server import GatewayServer  # noqa: PLC0415
    from jobs_service.infrastructure.heap import settle_heap  # noqa: PLC0415

    host, port = _bind(args, settings)
    # What the lifespan would refuse, refused here: one line and exit 2 before the port
    # is bound (raised in the lifespan, uvicorn logs a traceback and exits 3).
    try:
        check_gateway_security(settings)
        broker = shared_broker()
        check_webhook_routes(settings, broker)
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None
    if not embedded:  # `jobsctl run` migrates the database itself, once it listens
        _require_shared_services(
            settings,
            "api",
            "`jobsctl api` queues runs for workers through Redis, and without it would run "
            "them in its own memory, seen by no worker and lost on restart. Set it, or run "
            "`jobsctl run` (the embedded default: API, worker and scheduler in one process)",
        )
    listening = _listen(host, port)
    app = create_app(settings, broker=broker, embedded=embedded)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        timeout_graceful_shutdown=int(settings.worker.shutdown_timeout_s),
        server_header=False,
    )
    server = GatewayServer(config)
    if embedded:
        _announce(settings, host, port)
    # The app and every module are built: keep the collector off them (as in workers).
    # Measured on webhook ingestion, young and full collections otherwise took half of
    # the gateway's CPU and paused it up to a quarter of a second.
    settle_heap()
    try:
        server.run(sockets=listening)
    except ConfigurationError as exc:  # raised as the app started (an unusable SQLite path)
        raise CliError(str(exc)) from None
    # Any other error of a failed start reaches `jobsctl`'s own handler: one line for a
    # database that refuses the connection, a traceback for a bug.
    return 0 if server.started else 1


def _require_shared_services(settings: Settings, process: str, without_redis: str) -> None:
    """What every process of a deployment on Redis needs before it starts: the broker's
    URL (``without_redis`` says why, in the one-line refusal) and this release's schema."""
    if settings.redis_url is None:
        raise CliError(f"JOBS_REDIS_URL is not set: {without_redis}")
    _require_schema(settings, process)


def _require_schema(settings: Settings, process: str) -> None:
    """Refuse to start, in one line (exit 1), on a database that answers without this
    release's schema: never migrated, or at an older revision. Checked before a port is
    bound or a worker process spawned; a newer revision (a rollout in progress) is
    logged and accepted, and a database that does not answer is left to the process,
    as before (see :mod:`~jobs_service.infrastructure.schema`)."""
    from jobs_service.cli.context import run_async  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415
    from jobs_service.infrastructure.schema import require_schema  # noqa: PLC0415

    async def check() -> None:
        database = Database(settings.database_url, settings.database)
        try:
            timeout_s = settings.database.connect_timeout_s
            await require_schema(database, process, timeout_s=timeout_s)
        finally:
            await database.close()

    run_async(check())


def _listen(host: str, port: int) -> list[socket.socket]:
    """The API's sockets, bound before anything starts: a port in use is one line and
    exit 1, before ``jobsctl run`` migrates and starts its scheduler (uvicorn, binding
    last, logged the error and exited 3 after all that). One socket per address the
    host resolves to (``localhost``: 127.0.0.1 and ::1), IPv6 ones IPv6-only, as
    asyncio's own ``create_server`` binds them."""
    address = host.strip("[]")
    try:
        found = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port} ({exc})", EXIT_FAILED) from None
    bound: list[socket.socket] = []
    for family, kind, proto, _, where in dict.fromkeys(found):
        try:
            bound.append(_bound(family, kind, proto, where))
        except OSError as exc:
            for listening in bound:
                listening.close()
            reason = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise CliError(f"cannot listen on {host}:{port}: {reason}", EXIT_FAILED) from None
    return bound


def _bound(family: int, kind: int, proto: int, where: Any) -> socket.socket:
    listening = socket.socket(family, kind, proto)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        listening.bind(where)
    except OSError:
        listening.close()
        raise
    return listening


def _announce(settings: Settings, host: str, port: int) -> None:
    from jobs_service.core.redaction import redact_url  # noqa: PLC0415
    from jobs_service.infrastructure.database import sqlite_path  # noqa: PLC0415

    base = f"http://{host}:{port}"
    database = sqlite_path(settings.database_url)
    lines = [
        "Jobs Service (embedded: one process, in-memory broker)",
        f"  API       {base}/v1/tasks",
        f"  API docs  {base}/docs",
        f"  health    {base}/health",
        f"  database  {database.resolve() if database else redact_url(settings.database_url)}",
        "  try       jobsctl enqueue check_system_health --wait   (or POST "
        f"{base}/v1/tasks/check_system_health)",
    ]
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def run(args: argparse.Namespace, settings: Settings) -> int:
    """All-in-one embedded process.

    Only on an SQLite file: the embedded process keeps its queue in memory, so at start
    it fails the runs an earlier one left unfinished. On a PostgreSQL database that a
    deployment's workers share, those are the live runs of that deployment.
    """
    from sqlalchemy import make_url  # noqa: PLC0415

    if settings.redis_url is not None:
        raise CliError(
            "JOBS_REDIS_URL is set, so tasks go to Redis: run `jobsctl api`, "
            "`jobsctl worker` and `jobsctl scheduler` (or unset it for the embedded default)"
        )
    if not make_url(settings.database_url).drivername.startswith("sqlite"):
        raise CliError(
            "JOBS_DATABASE_URL is not an SQLite database: the embedded `jobsctl run` would "
            "fail, as left over, the unfinished runs of every worker on that database. "
            "With PostgreSQL, set JOBS_REDIS_URL and run `jobsctl api`, `jobsctl worker` "
            "and `jobsctl scheduler` (or unset JOBS_DATABASE_URL for the embedded default)"
        )
    return _serve(args, settings, embedded=True)


def api(args: argparse.Namespace, settings: Settings) -> int:
    """The gateway alone: it queues runs for `jobsctl worker` processes through Redis.
    Without Redis its broker would be in-memory, running tasks inside the gateway where
    no worker, scheduler or restart can see them."""
    return _serve(args, settings, embedded=False)


def worker(args: argparse.Namespace, settings: Settings) -> int:
    """TaskIQ worker processes over the shared broker."""
    _require_shared_services(
        settings,
        "worker",
        "workers need Redis. Without it tasks run inside `jobsctl run` (the embedded default).",
    )
    if settings.worker.metrics_port:
        # Before anything creates a metric: the multiprocess mode is fixed at import.
        from jobs_service.infrastructure.worker_metrics import (  # noqa: PLC0415
            prepare_multiprocess_metrics,
            serve_worker_metrics,
        )

        directory = prepare_multiprocess_metrics()
        _serve_metrics(
            "worker",
            settings.worker.metrics_host,
            settings.worker.metrics_port,
            lambda host, port: serve_worker_metrics(host, port, directory),
        )
    shared_broker()  # fail here, in one line, if a task module is broken
    from taskiq.cli.worker.args import WorkerArgs  # noqa: PLC0415
    from taskiq.cli.worker.run import run_worker  # noqa: PLC0415

    options = WorkerArgs(
        broker="jobs_service.broker:broker",
        receiver="jobs_service.infrastructure.receiver:JobsReceiver",
        max_prefetch=settings.worker.prefetch,
        modules=[],
        workers=args.processes or settings.worker.processes,
        max_async_tasks=args.concurrency or settings.worker.concurrency,
        shutdown_timeout=settings.worker.shutdown_timeout_s,
        wait_tasks_timeout=settings.worker.shutdown_timeout_s,
        configure_logging=False,
    )
    status = run_worker(options)
    return int(status or 0)


def scheduler(args: argparse.Namespace, settings: Settings) -> int:
    """The TaskIQ scheduler over the label schedules."""
    del args
    _require_shared_services(
        settings,
        "scheduler",
        "a separate scheduler needs Redis to reach the workers. The embedded `jobsctl run` "
        "includes the scheduler.",
    )
    shared_broker()
    if settings.scheduler.metrics_port:
        _serve_scheduler_metrics(settings)
    from jobs_service.infrastructure.heap import settle_heap  # noqa: PLC0415
    from jobs_service.scheduler.loop import run_scheduler_loop  # noqa: PLC0415
    from jobs_service.scheduler.process import scheduler as jobs_scheduler  # noqa: PLC0415

    settle_heap()  # what was imported stays: collections skip it (fire timing)

    from jobs_service.cli.context import run_async  # noqa: PLC0415

    jobs_scheduler.broker.is_scheduler_process = True  # as TaskIQ's command marks it
    run_async(_until_terminated(run_scheduler_loop(jobs_scheduler)))
    return 0


def exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM before the event loop takes it over (``jobsctl`` installs this first
    thing, before settings and task modules load): nothing is in flight, so a plain
    exit 0 rather than the default action's kill."""
    del signum, frame
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # exiting: a second one changes nothing
    raise SystemExit(0)


async def _until_terminated(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` until it ends or SIGTERM arrives (a container stop, systemd):
    the signal cancels it, so its shutdown runs (the scheduler finishes the tick in
    progress) and the process exits 0, where the default action would kill it mid-tick.

    A second SIGTERM changes nothing, nor does one after the work is done: the process
    is exiting, and the interpreter's own exit would otherwise restore the default
    action, so a late signal (a supervisor sending it twice) turned a clean stop into
    exit 143. SIGINT (Ctrl-C) keeps the event loop's own handling and exits 130.
    """
    task = asyncio.ensure_future(coroutine)
    loop = asyncio.get_running_loop()
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        if not terminated:
            terminated = True
            task.cancel()

    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
        loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not terminated or (current is not None and current.cancelling()):
            raise  # not our SIGTERM: SIGINT, or a cancellation from elsewhere
    finally:
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # done: exiting anyway


def _serve_scheduler_metrics(settings: Settings) -> None:
    from jobs_service.scheduler.metrics import serve_scheduler_metrics  # noqa: PLC0415

    scheduler = settings.scheduler
    _serve_metrics(
        "scheduler", scheduler.metrics_host, scheduler.metrics_port, serve_scheduler_metrics
    )


def _serve_metrics(process: str, host: str, port: int, serve: Callable[[str, int], object]) -> None:
    """Start a process's metrics endpoint. If the port is taken, the work matters more
    than its metrics: say so loudly and run anyway (two workers on one host need a port
    each)."""
    try:
        serve(host, port)
    except OSError as exc:
        from jobs_service.core.logging import get_logger  # noqa: PLC0415

        get_logger(f"jobs_service.{process}").error(
            f"{process}-metrics-unavailable",
            address=f"{host}:{port}",
            error=exc.strerror,
            message=f"set {process}.metrics_port to a free port (or 0)",
        )
