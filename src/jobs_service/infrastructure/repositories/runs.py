"""Queries on ``job_runs``.

Writes come from two sides. Producers insert the ``queued`` row (``ON CONFLICT DO
NOTHING``, so a late producer write never rewinds a run a worker already started).
Workers upsert state changes in batches; an update applies only when its attempt is not
older than the stored one, so a stale event cannot overwrite a newer attempt. Each
attempt's end is also kept in ``run_attempts``, the run's per-attempt history, except,
on PostgreSQL, a succeeded run's last attempt: the run's own row is its record.

Operators move a finished run back to ``queued`` (retry) and an unfinished one to
``cancelled``; both are conditional updates, so two operators (or an operator and a
worker) racing on one run cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, delete, func, literal_column, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from jobs_service.infrastructure.models import (
    TERMINAL_STATUSES,
    Delivery,
    JobRun,
    RunAttempt,
    WebhookEvent,
)
from jobs_service.infrastructure.repositories.runs_bulk import (
    insert_queued_runs_bulk,
    upsert_attempts_bulk,
    upsert_run_events_bulk,
    write_run_batch_bulk,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = [
    "QueuedRun",
    "RunEvent",
    "RunFilter",
    "claim_idempotency_key",
    "count_stuck_runs",
    "delete_finished_before",
    "fail_orphaned",
    "fail_unfinished",
    "fail_unsendable",
    "get_run",
    "get_run_by_idempotency_key",
    "insert_queued_runs",
    "list_attempts",
    "list_runs",
    "mark_cancelled",
    "requeue_finished",
    "restore_finished",
    "unfinished_workers",
    "upsert_attempts",
    "upsert_run_events",
    "workers_of_old_runs",
    "write_run_batch",
]


@dataclass(slots=True)
class QueuedRun:
    """A run as its producer knows it, before any worker touched it."""

    run_id: str
    task: str
    kwargs: dict[str, Any]
    source: str
    queued_at: datetime
    idempotency_key: str | None = None
    schedule_id: int | None = None
    scheduled_for: datetime | None = None
    webhook_event_id: int | None = None
    deliver_to: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        """Column values for the insert."""
        return {
            "run_id": self.run_id,
            "task": self.task,
            "kwargs": self.kwargs,
            "status": "queued",
            "attempt": 0,
            "source": self.source,
            "queued_at": self.queued_at,
            "idempotency_key": self.idempotency_key,
            "schedule_id": self.schedule_id,
            "scheduled_for": self.scheduled_for,
            "webhook_event_id": self.webhook_event_id,
            "deliver_to": self.deliver_to,
        }


@dataclass(slots=True)
class RunEvent:
    """A state change observed by a worker; carries enough to create the row if missing."""

    run_id: str
    task: str
    kwargs: dict[str, Any]
    source: str
    status: str
    attempt: int
    worker: str
    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    summary: dict[str, int] | None = None
    error: dict[str, str] | None = None
    schedule_id: int | None = None
    scheduled_for: datetime | None = None
    webhook_event_id: int | None = None
    deliver_to: dict[str, Any] | None = None
    content: str | None = None
    #: The attempt's last progress report (finish events); None keeps the stored one.
    progress: dict[str, Any] | None = None

    @property
    def is_finish(self) -> bool:
        """True for the end of an attempt (success, failure, retry, death)."""
        return self.finished_at is not None

    def merged_after(self, earlier: RunEvent) -> RunEvent:
        """Fold an earlier event of the same run into this later one."""
        if self.started_at is None and earlier.attempt == self.attempt:
            self.started_at = earlier.started_at
        return self

    def row(self) -> dict[str, Any]:
        """Column values for the upsert."""
        return {
            "run_id": self.run_id,
            "task": self.task,
            "kwargs": self.kwargs,
            "status": self.status,
            "attempt": self.attempt,
            "source": self.source,
            "queued_at": self.queued_at,
            "idempotency_key": None,
            "schedule_id": self.schedule_id,
            "scheduled_for": self.scheduled_for,
            "webhook_event_id": self.webhook_event_id,
            "worker": self.worker,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_ms": self.duration_ms,
            "summary": self.summary,
            "error": self.error,
            "deliver_to": self.deliver_to,
            "content": self.content,
            "progress": self.progress,
        }

    def attempt_row(self) -> dict[str, Any]:
        """Column values of this attempt's ``run_attempts`` row (finish events only)."""
        return {
            "run_id": self.run_id,
            "attempt": self.attempt,
            "status": self.status,
            "worker": self.worker,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_ms": self.duration_ms,
            "error": self.error,
        }


@dataclass(slots=True)
class RunFilter:
    """Filters of ``GET /v1/runs``; None means no filter."""

    task: str | None = None
    status: str | None = None
    source: str | None = None
    schedule_id: int | None = None
    queued_after: datetime | None = None
    queued_before: datetime | None = None

    def apply(self, query: Select[JobRun]) -> Select[JobRun]:
        """Add a WHERE clause per filter that is set."""
        if self.task is not None:
            query = query.where(JobRun.task == self.task)
        if self.status is not None:
            query = query.where(JobRun.status == self.status)
        if self.source is not None:
            query = query.where(JobRun.source == self.source)
        if self.schedule_id is not None:
            query = query.where(JobRun.schedule_id == self.schedule_id)
        if self.queued_after is not None:
            query = query.where(JobRun.queued_at >= self.queued_after)
        if self.queued_before is not None:
            query = query.where(JobRun.queued_at < self.queued_before)
        return query


def _insert_for(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def insert_queued_runs(connection: AsyncConnection, runs: Sequence[QueuedRun]) -> None:
    """Insert ``queued`` rows in one round trip; rows that already exist are left alone."""
    if not runs:
        return
    if connection.dialect.name == "postgresql":
        await insert_queued_runs_bulk(connection, runs)
        return
    stmt = _insert_for(connection.dialect.name)(JobRun).on_conflict_do_nothing(
        index_elements=[JobRun.run_id]
    )
    await connection.execute(stmt, [run.row() for run in runs])


async def claim_idempotency_key(connection: AsyncConnection, run: QueuedRun) -> bool:
    """Insert ``run``'s ``queued`` row unless its idempotency key (or run id) is taken;
    whether it was inserted. A key held by a transaction not yet committed makes this
    wait for it (the unique index), so the answer is about committed runs only."""
    stmt = (
        _insert_for(connection.dialect.name)(JobRun)
        .values(run.row())
        .on_conflict_do_nothing()
        .returning(JobRun.run_id)
    )
    return (await connection.execute(stmt)).first() is not None


async def upsert_run_events(connection: AsyncConnection, events: Sequence[RunEvent]) -> None:
    """Write worker events; at most two statements whatever the batch size."""
    if connection.dialect.name == "postgresql":
        await upsert_run_events_bulk(connection, events)
        return
    starts = [event.row() for event in events if not event.is_finish]
    finishes = [event.row() for event in events if event.is_finish]
    insert = _insert_for(connection.dialect.name)
    for rows, finished in ((starts, False), (finishes, True)):
        if not rows:
            continue
        stmt = insert(JobRun)
        excluded = stmt.excluded
        values: dict[str, Any] = {
            "status": excluded.status,
            "attempt": excluded.attempt,
            "worker": excluded.worker,
        }
        if finished:
            values |= {
                "started_at": func.coalesce(excluded.started_at, JobRun.started_at),
                "finished_at": excluded.finished_at,
                "duration_ms": excluded.duration_ms,
                "summary": excluded.summary,
                "error": excluded.error,
                "content": excluded.content,
                # JSON columns bind None as the text 'null' on SQLite: not a report.
                "progress": func.coalesce(
                    func.nullif(excluded.progress, literal_column("'null'")), JobRun.progress
                ),
            }
        else:
            values |= {"started_at": excluded.started_at, "finished_at": None, "duration_ms": None}
        # An event applies to a newer attempt, or to the same attempt while the run is
        # still active: a redelivered copy of an attempt that already ended can neither
        # rewind it to `running` nor turn its `succeeded` into `failed`, and nothing of
        # an older attempt overwrites a newer one.
        # Not `queued`: a queued row is always an attempt behind its message (0 before
        # the first, N after a retry by hand), so a same-attempt event there is a late
        # one from before the retry. Plain comparisons: an expanding IN cannot be used
        # with executemany.
        active = or_(JobRun.status == "running", JobRun.status == "retrying")
        guard = (JobRun.attempt < excluded.attempt) | (
            active & (JobRun.attempt <= excluded.attempt)
        )
        stmt = stmt.on_conflict_do_update(index_elements=[JobRun.run_id], set_=values, where=guard)
        await connection.execute(stmt, rows)


async def write_run_batch(
    connection: AsyncConnection, events: Sequence[RunEvent], attempts: Sequence[dict[str, Any]]
) -> None:
    """Write worker events and ended attempts (a recorder flush): one statement on
    PostgreSQL, the two upserts below on SQLite."""
    if connection.dialect.name == "postgresql":
        await write_run_batch_bulk(connection, events, attempts)
        return
    await upsert_run_events(connection, events)
    await upsert_attempts(connection, attempts)


async def upsert_attempts(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Write ended attempts (``RunEvent.attempt_row``) in one multi-row upsert.

    An attempt that already has a row keeps it (a redelivered copy of an attempt cannot
    change its outcome, as in ``job_runs``), except a row no worker wrote: the one an
    operator's cancel leaves, which the worker that ran the attempt then completes.
    ``rows`` must not repeat a (run_id, attempt) pair.
    """
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        await upsert_attempts_bulk(connection, rows)
        return
    stmt = _insert_for(connection.dialect.name)(RunAttempt)
    excluded = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=[RunAttempt.run_id, RunAttempt.attempt],
        set_={
            "status": excluded.status,
            "worker": excluded.worker,
            "started_at": func.coalesce(excluded.started_at, RunAttempt.started_at),
            "finished_at": excluded.finished_at,
            "duration_ms": excluded.duration_ms,
            "error": excluded.error,
        },
        where=RunAttempt.worker.is_(None),
    )
    await connection.execute(stmt, list(rows))


async def list_attempts(session: AsyncSession, run: JobRun) -> list[RunAttempt]:
    """Every ended attempt of ``run``, first attempt first.

    A succeeded run's last attempt is its own row: on PostgreSQL the recorder writes no
    ``run_attempts`` row for it (see ``runs_bulk.WRITE_RUN_BATCH``), so it is listed
    from the run (an unsaved object, never added to the session).
    """
    query = select(RunAttempt).where(RunAttempt.run_id == run.run_id).order_by(RunAttempt.attempt)
    attempts = list((await session.execute(query)).scalars())
    if run.status == "succeeded" and all(row.attempt != run.attempt for row in attempts):
        attempts.append(_attempt_of(run))  # a succeeded attempt is the run's last
    return attempts


def _attempt_of(run: JobRun) -> RunAttempt:
    """The attempt a succeeded run's row records."""
    return RunAttempt(
        run_id=run.run_id,
        attempt=run.attempt,
        status=run.status,
        worker=run.worker,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_ms=run.duration_ms,
        error=None,
    )


async def mark_cancelled(
    connection: AsyncConnection,
    run: JobRun,
    *,
    attempt: int,
    error: dict[str, str],
    at: datetime,
) -> bool:
    """Move ``run`` (as read, still queued, running or retrying) to ``cancelled`` at
    ``attempt``; False if it changed meanwhile.

    The cancelled attempt gets its ``run_attempts`` row now, without a worker: for an
    attempt that never started it is the whole story; for a running one the worker
    completes it when the attempt stops (or never, if the worker is gone).
    """
    running = run.status == "running"
    # The row describes the cancelled attempt: one that never started has no start,
    # worker or duration (a retrying run's row still shows its previous attempt's).
    never_started: dict[str, Any] = {} if running else {"started_at": None, "worker": None}
    result = await connection.execute(
        update(JobRun)
        .where(
            JobRun.run_id == run.run_id,
            JobRun.status == run.status,
            JobRun.attempt == run.attempt,
        )
        .values(
            status="cancelled",
            attempt=attempt,
            finished_at=at,
            duration_ms=None,
            error=error,
            **never_started,
        )
    )
    if not result.rowcount:
        return False
    # A run cancelled before it started is never recorded by a worker, which is what
    # would mark its webhook event: mark it here (a running one's worker does the same).
    await _fail_webhook_events(connection, JobRun.run_id == run.run_id, error=error, at=at)
    started = run.started_at if running else None
    await connection.execute(
        _insert_for(connection.dialect.name)(RunAttempt)
        .values(
            run_id=run.run_id,
            attempt=attempt,
            status="cancelled",
            worker=None,
            started_at=started,
            finished_at=at,
            error=error,
        )
        .on_conflict_do_nothing(index_elements=[RunAttempt.run_id, RunAttempt.attempt])
    )
    return True


#: What a retry clears: the outcome of the attempt before it.
_OUTCOME_COLUMNS = (
    "worker",
    "started_at",
    "finished_at",
    "duration_ms",
    "summary",
    "error",
    "content",
    "progress",
)


async def requeue_finished(
    connection: AsyncConnection, run: JobRun, *, queued_at: datetime
) -> bool:
    """Move ``run`` (as read: failed, dead or cancelled) back to ``queued``, keeping its
    attempt number; False if it changed meanwhile. Its attempts stay in ``run_attempts``.

    The webhook event it processes, if this run is still the event's, is ``enqueued``
    again: a settled event is deletable once old, and the retried run needs its body.
    """
    result = await connection.execute(
        update(JobRun)
        .where(
            JobRun.run_id == run.run_id,
            JobRun.status == run.status,
            JobRun.attempt == run.attempt,
        )
        .values(
            status="queued",
            queued_at=queued_at,
            send_unconfirmed_at=None,
            **dict.fromkeys(_OUTCOME_COLUMNS),
        )
    )
    if not result.rowcount:
        return False
    if run.webhook_event_id is not None:
        await _set_event_status(connection, run, "enqueued", at=queued_at)
    return True


async def restore_finished(connection: AsyncConnection, run: JobRun) -> None:
    """Undo :func:`requeue_finished` (its message could not be sent), unless a worker
    has started the run meanwhile."""
    result = await connection.execute(
        update(JobRun)
        .where(
            JobRun.run_id == run.run_id,
            JobRun.status == "queued",
            JobRun.attempt == run.attempt,
        )
        .values(
            status=run.status,
            queued_at=run.queued_at,
            **{column: getattr(run, column) for column in _OUTCOME_COLUMNS},
        )
    )
    if result.rowcount and run.webhook_event_id is not None:
        await _set_event_status(connection, run, "failed", at=datetime.now(UTC))


async def _set_event_status(
    connection: AsyncConnection, run: JobRun, status: str, *, at: datetime
) -> None:
    """Set the status of ``run``'s webhook event, if it still points to ``run`` (a
    replay gives an event a new run)."""
    await connection.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == run.webhook_event_id, WebhookEvent.run_id == run.run_id)
        .values(status=status, updated_at=at)
    )


async def get_run(
    session: AsyncSession, *, run_id: str | None = None, id: int | None = None
) -> JobRun | None:
    """One run by its run id or row id."""
    query = select(JobRun)
    query = (
        query.where(JobRun.run_id == run_id) if run_id is not None else query.where(JobRun.id == id)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def get_run_by_idempotency_key(session: AsyncSession, key: str) -> JobRun | None:
    """The run created earlier with this ``Idempotency-Key``, if any."""
    query = select(JobRun).where(JobRun.idempotency_key == key)
    return (await session.execute(query)).scalar_one_or_none()


async def list_runs(
    session: AsyncSession, filters: RunFilter, *, limit: int, after_id: int | None
) -> list[JobRun]:
    """Newest first; ``after_id`` is the last id of the previous page. Fetches limit+1."""
    query = filters.apply(select(JobRun))
    if after_id is not None:
        query = query.where(JobRun.id < after_id)
    query = query.order_by(JobRun.id.desc()).limit(limit + 1)
    return list((await session.execute(query)).scalars())


async def delete_finished_before(
    session: AsyncSession, cutoff: datetime, *, batch_size: int
) -> int:
    """Delete up to ``batch_size`` finished runs older than ``cutoff``; returns the count.

    Deleting in batches keeps each transaction (and PostgreSQL's locks and WAL) small,
    so a first cleanup of a large backlog does not stall the workers' writes.
    """
    old_enough = JobRun.status.in_(TERMINAL_STATUSES) & (JobRun.finished_at < cutoff)
    found = await session.execute(select(JobRun.id).where(old_enough).limit(batch_size))
    ids = list(found.scalars())
    if not ids:
        return 0
    # The DELETE checks again: a retry committed since the SELECT made the run queued
    # (PostgreSQL re-evaluates the condition on a row another transaction changed).
    deleted = await session.execute(
        delete(JobRun).where(JobRun.id.in_(ids), old_enough).returning(JobRun.run_id)
    )
    run_ids = list(deleted.scalars())
    if run_ids:
        await session.execute(delete(Delivery).where(Delivery.run_id.in_(run_ids)))
        await session.execute(delete(RunAttempt).where(RunAttempt.run_id.in_(run_ids)))
    # A batch cut short by such a race ends this cleanup early; the next one goes on.
    return len(run_ids)


async def fail_unfinished(
    connection: AsyncConnection,
    *,
    before: datetime,
    error: dict[str, str],
    run_ids: Sequence[str] | None = None,
) -> int:
    """Mark runs queued or running since before ``before`` as failed with ``error``
    (only those of ``run_ids`` if given)."""
    unfinished = JobRun.status.in_(("queued", "running", "retrying")) & (JobRun.queued_at < before)
    if run_ids is not None:
        unfinished &= JobRun.run_id.in_(list(run_ids))
    await _fail_webhook_events(connection, unfinished, error=error, at=before)
    result = await connection.execute(
        update(JobRun).where(unfinished).values(status="failed", error=error, finished_at=before)
    )
    return int(result.rowcount or 0)


async def unfinished_workers(connection: AsyncConnection) -> list[tuple[str, str, str | None]]:
    """``(run_id, status, worker)`` of every run queued, running or retrying."""
    rows = await connection.execute(
        select(JobRun.run_id, JobRun.status, JobRun.worker).where(
            JobRun.status.in_(("queued", "running", "retrying"))
        )
    )
    return [(row.run_id, row.status, row.worker) for row in rows]


async def fail_unsendable(
    connection: AsyncConnection, run_ids: Sequence[str], *, error: dict[str, str], at: datetime
) -> None:
    """Mark ``failed`` with ``error`` the runs, still ``queued``, that can never be sent
    (their task is no longer registered), and their webhook events: no worker will ever
    record them."""
    never_sent = JobRun.run_id.in_(list(run_ids)) & (JobRun.status == "queued")
    await _fail_webhook_events(connection, never_sent, error=error, at=at)
    await connection.execute(
        update(JobRun).where(never_sent).values(status="failed", error=error, finished_at=at)
    )


async def _fail_webhook_events(
    connection: AsyncConnection, runs_where: Any, *, error: dict[str, str], at: datetime
) -> None:
    """Mark ``failed`` the webhook events, still accepted or enqueued, of the runs
    ``runs_where`` selects: runs ended without a worker recording them, so nothing else
    would, and their events would never become deletable. An event replayed since (it
    points to a newer run) is the newer run's to end."""
    await connection.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.status.in_(("accepted", "enqueued")),
            tuple_(WebhookEvent.id, WebhookEvent.run_id).in_(
                select(JobRun.webhook_event_id, JobRun.run_id).where(
                    runs_where, JobRun.webhook_event_id.is_not(None)
                )
            ),
        )
        .values(status="failed", error=error, updated_at=at)
    )


async def count_stuck_runs(session: AsyncSession, older_than: datetime) -> int:
    """Runs queued or running since before ``older_than``."""
    query = (
        select(func.count())
        .select_from(JobRun)
        .where(
            or_(
                (JobRun.status == "queued") & (JobRun.queued_at < older_than),
                (JobRun.status == "running") & (JobRun.started_at < older_than),
            )
        )
    )
    return int((await session.execute(query)).scalar_one())


async def workers_of_old_runs(
    connection: AsyncConnection, *, started_before: datetime
) -> list[str]:
    """Workers named on runs ``running`` since before ``started_before``."""
    query = (
        select(JobRun.worker)
        .where(
            JobRun.status == "running",
            JobRun.started_at < started_before,
            JobRun.worker.is_not(None),
        )
        .distinct()
    )
    return [str(worker) for worker in (await connection.execute(query)).scalars()]


async def fail_orphaned(
    connection: AsyncConnection,
    *,
    dead_workers: Sequence[str],
    started_before: datetime,
    error: dict[str, str],
    now: datetime,
    still_pending: Callable[[list[str]], Awaitable[Collection[str]]] | None = None,
) -> list[str]:
    """Fail runs still ``running`` on workers known to be dead; returns their run ids.

    The caller decides who is dead (no heartbeat for longer than a reclaim takes).
    ``still_pending`` names the runs among them whose message is still pending in the
    stream: those will run again (reclaimed, perhaps waiting for a slot elsewhere) and
    are left alone. What is left had its message acknowledged and its outcome lost.
    """
    if not dead_workers:
        return []
    orphaned = (
        (JobRun.status == "running")
        & (JobRun.started_at < started_before)
        & JobRun.worker.in_(list(dead_workers))
    )
    run_ids = list((await connection.execute(select(JobRun.run_id).where(orphaned))).scalars())
    if run_ids and still_pending is not None:
        pending = set(await still_pending(run_ids))
        run_ids = [run_id for run_id in run_ids if run_id not in pending]
    if not run_ids:
        return []
    # Only the runs still orphaned now: one a worker ended meanwhile is left, and so
    # is its webhook event.
    failed = list(
        (
            await connection.execute(
                update(JobRun)
                .where(orphaned, JobRun.run_id.in_(run_ids))
                .values(status="failed", error=error, finished_at=now)
                .returning(JobRun.run_id)
            )
        ).scalars()
    )
    if failed:
        await _fail_webhook_events(connection, JobRun.run_id.in_(failed), error=error, at=now)
    return failed
