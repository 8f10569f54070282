"""Recording producers' keyless ``queued`` rows: concurrent submits share one statement.

A submit returns once its ``queued`` row is written (the run id a caller gets back is in
the history). Through the engine's pool a row costs a checkout with its liveness ping,
BEGIN, INSERT, COMMIT and a reset: about seven round trips, 1.5 ms under load, for one
row. Here submits go through a
:class:`~jobs_service.infrastructure.group_commit.GroupCommit` on a connection kept
between statements: a lone submit costs one INSERT round trip, and submits arriving
together share it. The statement goes straight to the driver's connection
(``HeldConnection.fetch``), which saves the producer's event loop most of the CPU a
statement through SQLAlchemy costs it. PostgreSQL only: the embedded SQLite database
keeps the plain transaction per submit.

These rows are committed asynchronously (``synchronous_commit = off``: the commit does
not wait for the WAL flush, which under load is most of a submit's latency). A database
crash within the WAL writer's delay (200 ms by default) can then lose such a row, and
only the row: the run's message is in Redis, and the worker that runs it writes the
full row itself. A row that claims an idempotency key is the claim, and is written in
its own transaction around the run's send instead (``JobsClient._submit_claimed``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from jobs_service.infrastructure.documents import document
from jobs_service.infrastructure.group_commit import GroupCommit

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jobs_service.infrastructure.database import Database
    from jobs_service.infrastructure.repositories.runs import QueuedRun

__all__ = ["INSERT_QUEUED", "QueuedRunWriter"]

_COLUMNS = (
    "run_id, task, kwargs, status, attempt, source, queued_at, idempotency_key, "
    "schedule_id, scheduled_for, webhook_event_id, deliver_to"
)
#: In run id order, as a worker's flush inserts runs: a keyless run's message goes out
#: before its row, so the flush may insert the same runs meanwhile (see
#: ``runs_bulk.WRITE_RUN_BATCH``), and two inserts that take keys in opposite orders
#: wait for each other until PostgreSQL's deadlock check (a second) cancels one. (Rows
#: written before their message is sent, as the webhook inbox's, cannot meet a flush.)
_INSERT = (
    f"INSERT INTO job_runs ({_COLUMNS}) SELECT {_COLUMNS} "  # noqa: S608 - constant columns
    "FROM json_populate_recordset(NULL::job_runs, $1::json) ORDER BY run_id"
)
#: Rows without a key: a fresh run id (UUIDv7) conflicts only with the row of its own
#: run, written by a worker that ran it before this insert landed (the message is sent
#: first; a database stall can hold the insert longer than a worker's flush). That row
#: is newer and stays; the others of the batch are inserted, not failed with it.
INSERT_QUEUED = f"{_INSERT} ON CONFLICT (run_id) DO NOTHING RETURNING run_id"


class QueuedRunWriter:
    """Inserts ``queued`` rows for concurrent callers, one statement per batch."""

    def __init__(self, database: Database, *, max_batch: int = 1000) -> None:
        self._connection = database.hold(autocommit=True, session=("SET synchronous_commit = off",))
        self._group: GroupCommit[QueuedRun, bool] = GroupCommit(self._write, max_batch=max_batch)
        #: Statements written so far (each holds every row submitted while the one
        #: before it ran).
        self.statements = 0

    async def record(self, run: QueuedRun) -> bool:
        """Insert ``run``'s row; False when a row with its run id or key already exists."""
        return await self._group.submit(run)

    async def record_many(self, runs: Sequence[QueuedRun]) -> list[bool]:
        """:meth:`record` for many rows at once (they share statements)."""
        return await self._group.submit_many(runs)

    async def aclose(self) -> None:
        """Give the kept connection back."""
        await self._connection.aclose()

    async def _write(self, batch: Sequence[QueuedRun]) -> list[bool]:
        rows = document([run.row() for run in batch])
        try:
            inserted = await self._insert(rows)
        except DBAPIError as exc:
            if not (exc.connection_invalidated and self._connection.reused):
                raise
            # The kept connection died while idle (a database restart): what the pool's
            # ping would have caught. Once more, on a new one.
            inserted = await self._insert(rows)
        self.statements += 1
        return [run.run_id in inserted for run in batch]

    async def _insert(self, rows: str) -> set[str]:
        return {row[0] for row in await self._connection.fetch(INSERT_QUEUED, rows)}
