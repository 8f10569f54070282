"""Working with runs: ``enqueue`` and ``runs`` (list, show, retry, cancel, watch)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from jobs_service.cli.audit_trail import cli_actor
from jobs_service.cli.context import run_async, shared_broker
from jobs_service.cli.errors import EXIT_FAILED, CliError, describe_failure
from jobs_service.cli.output import print_table

if TYPE_CHECKING:
    import argparse

    from sqlalchemy.ext.asyncio import AsyncSession

    from jobs_service.client import JobsClient
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
        from jobs_service.client import (  # noqa: PLC0415
            EnqueueError,
            IdempotencyConflictError,
            InvalidIdempotencyKeyError,
        )
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
            except (
                UnknownTaskError,
                InvalidKwargsError,
                IdempotencyConflictError,
                InvalidIdempotencyKeyError,
            ) as exc:
                raise CliError(str(exc)) from None
            except EnqueueError as exc:
                raise CliError(str(exc), EXIT_FAILED) from None
            run = None
            if args.wait or embedded:
                run = await _wait_for_queued(client, submission.run_id, args.timeout)
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


async def _wait_for_queued(client: JobsClient, run_id: str, timeout_s: float) -> JobRun:
    """Wait for a run that is queued: whatever stops the wait, the message names the
    run, so nobody takes a run that will still run for one that was never queued (and
    enqueues it again)."""
    try:
        return await client.wait_for(run_id, timeout_s=timeout_s)
    except TimeoutError:
        raise CliError(f"run {run_id} did not finish within {timeout_s} s", EXIT_FAILED) from None
    except Exception as exc:
        reason = describe_failure(exc)
        if reason is None:
            raise
        msg = (
            f"run {run_id} is queued, but waiting for it failed: {reason}; "
            f"`jobsctl runs {run_id}` shows it later"
        )
        raise CliError(msg, EXIT_FAILED) from None


_ACTIONS = ("show", "retry", "cancel", "watch")


def runs(args: argparse.Namespace, settings: Settings) -> int:
    """List runs; show, retry or cancel one."""
    action, run_id = _runs_target(args.target)
    if run_id is not None and action in ("retry", "cancel"):
        return _act_on_run(action, run_id, settings)
    if run_id is not None and action == "watch":
        from jobs_service.cli.watch import watch_run  # noqa: PLC0415

        return watch_run(run_id, settings, as_json=args.json)
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415
    from jobs_service.infrastructure.repositories import runs as repo  # noqa: PLC0415

    async def read() -> list[JobRun] | dict[str, Any] | None:
        database = Database(settings.database_url, settings.database)
        try:
            async with database.sessions() as session:
                if run_id:
                    one = await repo.get_run(session, run_id=run_id)
                    return await _detail_json(session, one) if one else None
                filters = repo.RunFilter(task=args.task, status=args.status, source=args.source)
                return (await repo.list_runs(session, filters, limit=args.limit, after_id=None))[
                    : args.limit
                ]
        finally:
            await database.close()

    found = run_async(read())
    if run_id:
        if found is None:
            raise CliError(f"no run {run_id!r}", EXIT_FAILED)
        print(json.dumps(found, indent=2))
        return 0
    rows = found if isinstance(found, list) else []
    if args.json:
        print(json.dumps([_run_json(row) for row in rows], indent=2))
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


def _runs_target(words: list[str]) -> tuple[str, str | None]:
    """``[]`` lists; ``[RUN_ID]`` and ``[show, RUN_ID]`` show; ``[retry|cancel|watch,
    RUN_ID]``."""
    if not words:
        return "list", None
    if len(words) == 1 and words[0] not in _ACTIONS:
        return "show", words[0]
    if len(words) == 2 and words[0] in _ACTIONS:
        return words[0], words[1]
    raise CliError(
        "expected 'runs [RUN_ID]' or 'runs {show,retry,cancel,watch} RUN_ID', "
        f"got {' '.join(words)!r}"
    )


async def _detail_json(session: AsyncSession, run: JobRun) -> dict[str, Any]:
    """The run as ``GET /v1/runs/{run_id}`` shows it: with attempts and deliveries."""
    from jobs_service.gateway.schemas import RunDetailOut  # noqa: PLC0415
    from jobs_service.infrastructure.repositories import deliveries  # noqa: PLC0415
    from jobs_service.infrastructure.repositories import runs as repo  # noqa: PLC0415

    detail = RunDetailOut.of(
        run,
        attempts=await repo.list_attempts(session, run),
        deliveries=await deliveries.list_for_run(session, [run.run_id]),
    )
    return detail.model_dump(mode="json")


def _act_on_run(action: str, run_id: str, settings: Settings) -> int:
    """``runs retry`` / ``runs cancel``: the API's rules, straight against the database
    and the broker."""
    from jobs_service.client import (  # noqa: PLC0415
        EnqueueError,
        RunNotFoundError,
        RunStateError,
    )
    from jobs_service.gateway.app import create_app  # noqa: PLC0415
    from jobs_service.tasks.registry import InvalidKwargsError, UnknownTaskError  # noqa: PLC0415

    broker = shared_broker()
    embedded = settings.redis_url is None

    async def act() -> dict[str, Any]:
        app = create_app(settings, broker=broker, announce=False)
        async with app.router.lifespan_context(app):
            client = app.state.client
            if action == "retry":
                run = await client.retry(run_id)
                if embedded:
                    # No shared broker: the attempt runs here, like `jobsctl enqueue`
                    # (said once the retry was accepted, not for a run that is unknown).
                    sys.stderr.write("embedded mode: running the retried attempt here\n")
                    await client.wait_for(run_id, timeout_s=settings.worker.shutdown_timeout_s)
            else:
                run = await client.cancel(run_id, by=cli_actor())
                if embedded and run.worker:
                    sys.stderr.write(
                        "embedded mode: the run is recorded cancelled, but a run executing in "
                        "another process (jobsctl run) is not interrupted from here; use "
                        "POST /v1/runs/{run_id}/cancel on that process\n"
                    )
            async with app.state.runtime.database.sessions() as session:
                return await _detail_json(session, await client.get_run(run_id) or run)

    try:
        result = run_async(act())
    except RunNotFoundError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    except (RunStateError, UnknownTaskError, InvalidKwargsError, EnqueueError) as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    except TimeoutError:
        raise CliError(f"run {run_id} did not finish in time", EXIT_FAILED) from None
    print(json.dumps(result, indent=2))
    return 0
