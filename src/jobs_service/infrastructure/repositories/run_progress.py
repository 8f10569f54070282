"""Writes of ``job_runs.progress`` while runs execute, and the narrow read of a run's
live state (status and progress) that event streams poll.

A progress write applies only to a run that is not finished and whose row is not ahead
of the reporting attempt: the row of the same attempt while it is ``running``, or a row
an attempt behind (still ``queued`` at attempt 0 because the worker's batched ``running``
write has not landed yet, or ``retrying`` after the previous attempt). So a report that
arrives late can never land on an ended attempt: a finished run keeps the final progress
its end wrote (see ``RunEvent.progress``), and status columns are never touched here.

Both statements are one round trip per batch of runs, whatever its size.

On PostgreSQL the write never waits for a row another transaction holds: it locks the
rows it can with ``SKIP LOCKED`` and reports the others busy, for the next write. The
run recorder locks the same rows when runs start and end, in an order of its own; an
UPDATE that waited would take its locks in join order, and the two could deadlock
(PostgreSQL breaks that after ``deadlock_timeout``, a second, by failing one of them,
possibly the recorder's flush). Progress is advisory and rewritten by the run's end, so
waiting is never worth it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Integer, Row, bindparam, or_, select, update

from jobs_service.infrastructure.documents import document
from jobs_service.infrastructure.models import JobRun

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = [
    "LIVE_COLUMNS",
    "ProgressRow",
    "ProgressWritten",
    "read_live_states",
    "write_progress",
]

#: ``(run_id, attempt, progress document)``.
ProgressRow = tuple[str, int, dict[str, Any]]

WRITE_PROGRESS_PG = (
    "WITH d AS MATERIALIZED (SELECT * FROM json_to_recordset($1::json) "
    "AS d(run_id text, attempt integer, progress jsonb)), "
    "locked AS MATERIALIZED (SELECT run_id FROM job_runs "
    "WHERE run_id = ANY(ARRAY(SELECT run_id FROM d)) FOR UPDATE SKIP LOCKED), "
    "updated AS (UPDATE job_runs AS r SET progress = d.progress FROM d "
    "WHERE r.run_id = d.run_id AND r.run_id IN (SELECT run_id FROM locked) "
    "AND r.status IN ('queued', 'running', 'retrying') "
    "AND (r.attempt < d.attempt OR (r.status = 'running' AND r.attempt = d.attempt)) "
    "RETURNING 1) "
    "SELECT (SELECT count(*) FROM updated), ARRAY(SELECT run_id FROM job_runs "
    "WHERE run_id = ANY(ARRAY(SELECT run_id FROM d)) EXCEPT SELECT run_id FROM locked)"
)


class ProgressWritten(NamedTuple):
    """What one write did."""

    #: Rows the write changed (runs that ended meanwhile, or whose row does not exist
    #: yet, are not counted).
    changed: int
    #: Runs whose row another transaction held: not written, worth trying again.
    busy: list[str]


def _sqlite_statement() -> Any:
    # Plain comparisons, not IN: an expanding IN cannot be used with executemany.
    attempt = bindparam("p_attempt", type_=Integer)
    return (
        update(JobRun)
        .where(
            JobRun.run_id == bindparam("p_run_id"),
            or_(JobRun.status == "queued", JobRun.status == "running", JobRun.status == "retrying"),
            or_(
                JobRun.attempt < attempt, (JobRun.status == "running") & (JobRun.attempt == attempt)
            ),
        )
        .values(progress=bindparam("p_progress", type_=JobRun.progress.type))
    )


async def write_progress(
    connection: AsyncConnection, rows: Sequence[ProgressRow]
) -> ProgressWritten:
    """Write the latest progress of each run in ``rows`` (one statement)."""
    if not rows:
        return ProgressWritten(0, [])
    if connection.dialect.name == "postgresql":
        reports = document(
            [
                {"run_id": run_id, "attempt": attempt, "progress": doc}
                for run_id, attempt, doc in rows
            ]
        )
        result = await connection.exec_driver_sql(WRITE_PROGRESS_PG, (reports,))
        row: Any = result.one()
        changed, busy = row
        return ProgressWritten(int(changed), list(busy))
    result = await connection.execute(
        _sqlite_statement(),
        [
            {"p_run_id": run_id, "p_attempt": attempt, "p_progress": doc}
            for run_id, attempt, doc in rows
        ],
    )
    return ProgressWritten(int(result.rowcount or 0), [])


#: What a watcher of a run needs: no kwargs, no result content (which may be large).
LIVE_COLUMNS = (
    JobRun.run_id,
    JobRun.status,
    JobRun.attempt,
    JobRun.progress,
    JobRun.started_at,
    JobRun.finished_at,
    JobRun.duration_ms,
    JobRun.summary,
    JobRun.error,
)


async def read_live_states(session: AsyncSession, run_ids: Sequence[str]) -> dict[str, Row[Any]]:
    """The :data:`LIVE_COLUMNS` of the runs of ``run_ids`` that exist, by run id; one
    query per 500 runs."""
    found: dict[str, Row[Any]] = {}
    for start in range(0, len(run_ids), 500):
        chunk = run_ids[start : start + 500]
        query = select(*LIVE_COLUMNS).where(JobRun.run_id.in_(chunk))
        found.update((row.run_id, row) for row in await session.execute(query))
    return found
