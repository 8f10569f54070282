"""Bulk writes of run rows on PostgreSQL: one statement and one parameter per batch.

SQLAlchemy's multi-row ``INSERT … ON CONFLICT`` binds every value of every row as its
own parameter and encodes JSON columns with the standard library; binding arrays (one
per column, ``unnest``) is better but asyncpg still encodes each element on its own.
Either way a recorder flush cost the worker 6-15 µs of CPU per run. Here a batch is one
JSON document (orjson, well under a microsecond per row) that PostgreSQL turns back into
rows of the table's own types with ``json_populate_recordset``: the parsing moves to
the database, which spends about as much per row on it as it already did on binding.

The statements mean exactly what their SQLAlchemy counterparts in
:mod:`~jobs_service.infrastructure.repositories.runs` mean (same conflict targets, same
guards); SQLite keeps using those.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobs_service.infrastructure.documents import document

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection

    from jobs_service.infrastructure.repositories.runs import QueuedRun, RunEvent
    from jobs_service.infrastructure.repositories.webhooks import WebhookOutcome

__all__ = [
    "insert_queued",
    "insert_queued_runs_bulk",
    "run_batch_statement",
    "upsert_attempts_bulk",
    "upsert_run_events_bulk",
    "write_run_batch_bulk",
]

_EVENT_COLUMNS = (
    "run_id, task, kwargs, status, attempt, source, queued_at, schedule_id, scheduled_for, "
    "webhook_event_id, worker, started_at, finished_at, duration_ms, summary, error, "
    "deliver_to, content, progress"
)
# An event applies to a newer attempt, or to the same attempt while the run is still
# active (see runs.upsert_run_events for why `queued` is not active here).
_GUARD = (
    "WHERE r.attempt < EXCLUDED.attempt OR "
    "(r.status IN ('running', 'retrying') AND r.attempt <= EXCLUDED.attempt)"
)


def _upsert_events(source: str) -> str:
    """Insert the job_runs rows of ``source`` (starts, finishes or both), updating a run
    that exists under the guard: a start (no ``finished_at``) keeps the stored summary,
    error and content, a finish sets them, and neither drops a stored progress report.

    In run id order, as producers insert their ``queued`` rows (``queued_runs``): a
    keyless run is sent before its row is written, so a worker may insert the same runs
    meanwhile, and two inserts taking keys in opposite orders deadlock until PostgreSQL
    cancels one, a second later.
    """
    kept_by_starts = ", ".join(
        f"{column} = CASE WHEN EXCLUDED.finished_at IS NULL THEN r.{column} "
        f"ELSE EXCLUDED.{column} END"
        for column in ("summary", "error", "content")
    )
    return (
        f"INSERT INTO job_runs AS r ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} "
        f"FROM {source} ORDER BY run_id "
        "ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, "
        "attempt = EXCLUDED.attempt, worker = EXCLUDED.worker, "
        "started_at = COALESCE(EXCLUDED.started_at, r.started_at), "
        "finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms, "
        f"{kept_by_starts}, progress = COALESCE(EXCLUDED.progress, r.progress) {_GUARD}"
    )


UPSERT_EVENTS = _upsert_events("json_populate_recordset(NULL::job_runs, $1::json)")
_ATTEMPT_COLUMNS = "run_id, attempt, status, worker, started_at, finished_at, duration_ms, error"
UPSERT_ATTEMPTS = (
    f"INSERT INTO run_attempts AS a ({_ATTEMPT_COLUMNS}) SELECT {_ATTEMPT_COLUMNS} "
    "FROM json_populate_recordset(NULL::run_attempts, $1::json) "
    "ON CONFLICT (run_id, attempt) DO UPDATE SET status = EXCLUDED.status, "
    "worker = EXCLUDED.worker, started_at = COALESCE(EXCLUDED.started_at, a.started_at), "
    "finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms, "
    "error = EXCLUDED.error WHERE a.worker IS NULL"
)
_QUEUED_COLUMNS = (
    "run_id, task, kwargs, status, attempt, source, queued_at, idempotency_key, "
    "schedule_id, scheduled_for, webhook_event_id, deliver_to"
)


def insert_queued(parameter: str, where: str = "") -> str:
    """Insert the ``queued`` rows of ``parameter`` (a JSON array of job_runs rows) that
    pass ``where``, leaving alone those that exist."""
    return (
        f"INSERT INTO job_runs ({_QUEUED_COLUMNS}) SELECT {_QUEUED_COLUMNS} "
        f"FROM json_populate_recordset(NULL::job_runs, {parameter}::json) "
        f"{where + ' ' if where else ''}ON CONFLICT (run_id) DO NOTHING"
    )


INSERT_QUEUED = insert_queued("$1")


_FINISH_SET = (
    "status = e.status, attempt = e.attempt, worker = e.worker, "
    "started_at = COALESCE(e.started_at, r.started_at), finished_at = e.finished_at, "
    "duration_ms = e.duration_ms, summary = e.summary, error = e.error, content = e.content, "
    # A run that never reported keeps what an earlier attempt reported.
    "progress = COALESCE(e.progress, r.progress)"
)
_START_SET = (
    "status = e.status, attempt = e.attempt, worker = e.worker, "
    "started_at = e.started_at, finished_at = NULL, duration_ms = NULL"
)
_APPLIES = (
    "(r.attempt < e.attempt OR (r.status IN ('running', 'retrying') AND r.attempt <= e.attempt))"
)


#: What the CTEs writing runs return of each row they wrote.
_WRITTEN = "r.run_id, r.attempt, r.status"


def _update_from(key: str, parameter: str, assignments: str) -> str:
    """CTEs reading ``parameter`` (a JSON array of job_runs rows) and updating the runs
    that exist (their producer recorded them ``queued``: nearly every run).

    An UPDATE costs PostgreSQL about a third less than an ``INSERT … ON CONFLICT DO
    UPDATE``, which first tries the insert. The runs are looked up with ``= ANY`` of the
    batch's ids, an index condition (on the recorder's connection, which plans without
    sequential scans: see ``Database.hold``), not a join the planner may turn into a
    scan of the whole table.
    """
    rows = f"{key}_rows"
    return (
        f"{rows} AS MATERIALIZED (SELECT * FROM json_populate_recordset(NULL::job_runs, "
        f"{parameter}::json)), "
        f"{key}_updated AS (UPDATE job_runs r SET {assignments} FROM {rows} e "
        f"WHERE r.run_id = e.run_id AND r.run_id = ANY(ARRAY(SELECT run_id FROM {rows})) "
        f"AND {_APPLIES} RETURNING {_WRITTEN})"
    )


#: The rows neither UPDATE wrote (a plain ``kiq()`` producer wrote none, or its insert
#: is still in flight), starts and finishes in one sorted insert (see
#: ``_upsert_events``). A row that exists but was not updated (an event older than the
#: stored state) finds its conflict and the same guard skips it.
_INSERT_MISSING = (
    "missing AS (SELECT * FROM starts_rows e WHERE e.run_id NOT IN "
    "(SELECT run_id FROM starts_updated) UNION ALL SELECT * FROM finishes_rows e "
    "WHERE e.run_id NOT IN (SELECT run_id FROM finishes_updated)), "
    f"inserted AS ({_upsert_events('missing')} RETURNING {_WRITTEN})"
)


#: The ended attempts of a flush that need a row of their own: all but a succeeded
#: attempt that the run's row records (written by this statement, or before it). A
#: succeeded run is never retried, so its row keeps that attempt for good, and
#: ``runs.list_attempts`` lists it from there: one row per run instead of two for
#: nearly every run. An attempt whose end the run's row does not show (a run cancelled
#: meanwhile) still gets its row, and a redelivered copy of an attempt the run's row
#: shows succeeded gets none (its first end stands, as the upsert's conflict decides
#: for the other attempts).
#: (A CASE, so the run is looked up only for the few attempts the first test keeps; a
#: scalar subquery, one probe of the run id index, because PostgreSQL may turn a NOT
#: EXISTS into a hash of every succeeded run.)
_ATTEMPTS_TO_KEEP = (
    "CASE WHEN n.status <> 'succeeded' OR (n.run_id, n.attempt) NOT IN "
    "(SELECT run_id, attempt FROM finishes_updated WHERE status = 'succeeded' UNION ALL "
    "SELECT run_id, attempt FROM inserted WHERE status = 'succeeded') "
    "THEN (SELECT j.attempt = n.attempt AND j.status = 'succeeded' FROM job_runs j "
    "WHERE j.run_id = n.run_id) IS NOT TRUE ELSE false END"
)
_WRITE_ATTEMPTS = UPSERT_ATTEMPTS.replace(
    "FROM json_populate_recordset(NULL::run_attempts, $1::json) ",
    f"FROM json_populate_recordset(NULL::run_attempts, $3::json) n WHERE {_ATTEMPTS_TO_KEEP} ",
)

#: A recorder flush in one statement with three parameters, JSON arrays of starts,
#: finishes and ended attempts. A run is never both a start and a finish of one batch,
#: so no row is written twice. (Three parameters rather than one document: PostgreSQL
#: re-parses a ``json`` value for every ``->`` taken from it.)
WRITE_RUN_BATCH = (
    "WITH "
    f"{_update_from('starts', '$1', _START_SET)}, "
    f"{_update_from('finishes', '$2', _FINISH_SET)}, "
    f"{_INSERT_MISSING}, "
    f"attempts AS ({_WRITE_ATTEMPTS} RETURNING 1) "
    "SELECT (SELECT count(*) FROM starts_updated) + (SELECT count(*) FROM finishes_updated) "
    "+ (SELECT count(*) FROM inserted), (SELECT count(*) FROM attempts)"
)


#: ``webhooks.mark_finished`` as a CTE: ``$4`` a JSON array of webhook_events rows,
#: each written only while its event is still processed by that run (not replayed since).
_MARK_WEBHOOKS = (
    "webhooks_finished AS (UPDATE webhook_events w SET status = o.status, "
    "error = o.error, updated_at = o.updated_at "
    "FROM json_populate_recordset(NULL::webhook_events, $4::json) o "
    "WHERE w.id = o.id AND w.run_id = o.run_id "
    "RETURNING 1), "
)
#: :data:`WRITE_RUN_BATCH` that also records the outcomes of webhook events whose runs
#: ended, in the same statement (so in the same transaction, as before in one).
WRITE_RUN_BATCH_WITH_WEBHOOKS = WRITE_RUN_BATCH.replace("WITH ", f"WITH {_MARK_WEBHOOKS}", 1)


def run_batch_statement(
    events: Sequence[RunEvent],
    attempts: Sequence[dict[str, Any]],
    outcomes: Sequence[WebhookOutcome],
    at: datetime,
) -> tuple[str, ...]:
    """A recorder flush as one statement and its parameters: ``runs.write_run_batch``
    and ``webhooks.mark_finished`` of ``outcomes`` (the last one of a run wins, as when
    they were written one by one; of two runs of one event, the one the event points
    to is written)."""
    parameters = _batch_parameters(events, attempts)
    if not outcomes:
        return (WRITE_RUN_BATCH, *parameters)
    last = {(event_id, run_id): (status, error) for event_id, status, run_id, error in outcomes}
    rows = [
        {"id": event_id, "status": status, "run_id": run_id, "error": error, "updated_at": at}
        for (event_id, run_id), (status, error) in last.items()
    ]
    return (WRITE_RUN_BATCH_WITH_WEBHOOKS, *parameters, _document(rows))


def _batch_parameters(
    events: Sequence[RunEvent], attempts: Sequence[dict[str, Any]]
) -> tuple[str, str, str]:
    """:data:`WRITE_RUN_BATCH`'s parameters: starts, finishes and ended attempts."""
    starts, finishes = _starts_and_finishes(events)
    return _document(starts), _document(finishes), _document(list(attempts))


def _starts_and_finishes(
    events: Sequence[RunEvent],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of the events that start an attempt, and of those that end one."""
    starts = [event.row() for event in events if not event.is_finish]
    finishes = [event.row() for event in events if event.is_finish]
    return starts, finishes


def _document(rows: list[dict[str, Any]]) -> str:
    # Aware datetimes become RFC 3339 text, which PostgreSQL reads as timestamptz; text
    # PostgreSQL refuses (a NUL in a run's content or error) is replaced (see documents).
    return document(rows)


async def upsert_run_events_bulk(connection: AsyncConnection, events: Sequence[RunEvent]) -> None:
    """``runs.upsert_run_events`` for PostgreSQL: starts and finishes, a statement each
    (a run may have both here, and one statement cannot write a row twice)."""
    for rows in _starts_and_finishes(events):
        if rows:
            await connection.exec_driver_sql(UPSERT_EVENTS, (_document(rows),))


async def upsert_attempts_bulk(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """``runs.upsert_attempts`` for PostgreSQL."""
    if rows:
        await connection.exec_driver_sql(UPSERT_ATTEMPTS, (_document(list(rows)),))


async def insert_queued_runs_bulk(connection: AsyncConnection, runs: Sequence[QueuedRun]) -> None:
    """``runs.insert_queued_runs`` for PostgreSQL."""
    if runs:
        await connection.exec_driver_sql(INSERT_QUEUED, (_document([run.row() for run in runs]),))


async def write_run_batch_bulk(
    connection: AsyncConnection, events: Sequence[RunEvent], attempts: Sequence[dict[str, Any]]
) -> None:
    """``runs.write_run_batch`` for PostgreSQL: one statement."""
    await connection.exec_driver_sql(WRITE_RUN_BATCH, _batch_parameters(events, attempts))
