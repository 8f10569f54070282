"""Working with runs: ``enqueue`` and ``runs``."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from jobs_service.cli.context import run_async, shared_broker
from jobs_service.cli.errors import EXIT_FAILED, CliError
from jobs_service.cli.output import print_table

if TYPE_CHECKING:
    import argparse

    from jobs_service.core.settings import Settings
    from jobs_service.infrastructure.models import JobRun

__all__ = ["enqueue", "runs"]


def _kwargs(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--kwargs is not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict):
        raise CliError("--kwargs must be a JSON object, e.g. '{\"days\": 7}'")
    return value


def _run_json(run: JobRun) -> dict[str, Any]:
    from jobs_service.gateway.schemas import RunOut  # noqa: PLC0415

    return RunOut.of(run).model_dump(mode="json")


def enqueue(args: argparse.Namespace, settings: Settings) -> int:
    """Queue a run; with ``--wait`` print its summary when it ends."""
    from jobs_service.tasks.registry import (  # noqa: PLC0415
        InvalidKwargsError,
        UnknownTaskError,
        find_task,
    )

    kwargs = _kwargs(args.kwargs)
    broker = shared_broker()
    try:  # fail on a typo before touching the database or the broker
        find_task(broker, args.name).validate_kwargs(kwargs)
    except (UnknownTaskError, InvalidKwargsError) as exc:
        raise CliError(str(exc)) from None

    async def submit() -> tuple[str, JobRun | None]:
        from jobs_service.client import EnqueueError, IdempotencyConflictError  # noqa: PLC0415
        from jobs_service.gateway.app import create_app  # noqa: PLC0415
        from jobs_service.infrastructure import migrate  # noqa: PLC0415
        from jobs_service.infrastructure.runtime import Runtime  # noqa: PLC0415

        embedded = settings.redis_url is None
        if embedded:
            # No shared broker to hand the run to: run it here, like `jobsctl run` would.
            sys.stderr.write(
                "embedded mode (no JOBS_REDIS_URL): running the task in this process\n"
            )
            probe = Runtime(settings)
            await migrate.upgrade(probe.database)
            await probe.database.close()
        app = create_app(settings, broker=broker, announce=False)
        async with app.router.lifespan_context(app):
            client = app.state.client
            try:
                submission = await client.submit(
                    args.name, kwargs, source="cli", idempotency_key=args.idempotency_key
                )
            except (UnknownTaskError, InvalidKwargsError, IdempotencyConflictError) as exc:
                raise CliError(str(exc)) from None
            except EnqueueError as exc:
                raise CliError(str(exc), EXIT_FAILED) from None
            run = None
            if args.wait or embedded:
                try:
                    run = await client.wait_for(submission.run_id, timeout_s=args.timeout)
                except TimeoutError:
                    raise CliError(
                        f"run {submission.run_id} did not finish within {args.timeout} s",
                        EXIT_FAILED,
                    ) from None
            return submission.run_id, run

    run_id, run = run_async(submit())
    if run is None:
        print(run_id)
        return 0
    print(
        json.dumps(
            {"run_id": run_id, "status": run.status, "summary": run.summary, "error": run.error},
            indent=2,
        )
    )
    return 0 if run.status == "succeeded" else EXIT_FAILED


def runs(args: argparse.Namespace, settings: Settings) -> int:
    """List runs, or show one."""
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415
    from jobs_service.infrastructure.repositories import runs as repo  # noqa: PLC0415

    async def read() -> list[JobRun]:
        database = Database(settings.database_url, settings.database)
        try:
            async with database.sessions() as session:
                if args.run_id:
                    one = await repo.get_run(session, run_id=args.run_id)
                    return [one] if one else []
                filters = repo.RunFilter(task=args.task, status=args.status, source=args.source)
                return (await repo.list_runs(session, filters, limit=args.limit, after_id=None))[
                    : args.limit
                ]
        finally:
            await database.close()

    try:
        rows = run_async(read())
    except OSError as exc:
        raise CliError(f"cannot reach the database ({exc})", EXIT_FAILED) from None
    if args.run_id and not rows:
        raise CliError(f"no run {args.run_id!r}", EXIT_FAILED)
    if args.json or args.run_id:
        data = [_run_json(row) for row in rows]
        print(json.dumps(data[0] if args.run_id else data, indent=2))
        return 0
    print_table(
        ["RUN ID", "TASK", "STATUS", "ATTEMPT", "SOURCE", "QUEUED AT", "MS", "SUMMARY"],
        [
            [
                row.run_id,
                row.task,
                row.status,
                str(row.attempt),
                row.source,
                row.queued_at.strftime("%Y-%m-%d %H:%M:%S"),
                str(row.duration_ms) if row.duration_ms is not None else "-",
                json.dumps(row.summary) if row.summary else (row.error or {}).get("type", "-"),
            ]
            for row in rows
        ],
    )
    return 0
