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
its own transaction around the run's send instead (``KeyClaims.submit``, in
:mod:`jobs_service.client`).

The run is already sent when its row is written, so a database that does not answer (a
table lock, a frozen server, a failover that black-holes connections) must hold neither
the caller nor the writer. A caller waits :data:`TIMEOUT_S` at most for its row, then
gets :class:`TimeoutError` (the producer answers without the row). And each statement is
bounded, as the statements share one connection and a stuck one would keep every later
submit of the process waiting behind it: the connection's ``statement_timeout`` has the
server cancel one that waits or runs longer than :data:`TIMEOUT_S` (so it does not take
the lock it queued for later, for nobody), and a statement whose answer has not come a
little after that is abandoned with its connection (a server that answers nothing cannot
cancel anything). Either way the next statement runs on a fresh connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.documents import document
from jobs_service.infrastructure.group_commit import GroupCommit

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jobs_service.infrastructure.database import Database
    from jobs_service.infrastructure.repositories.runs import QueuedRun

__all__ = ["INSERT_QUEUED", "TIMEOUT_S", "QueuedRunWriter"]

_log = get_logger("jobs_service.client")

#: The most a caller waits for its row, and a statement may take (waiting for locks
#: included): as long as a producer waits for the broker or a key's claim
#: (``JobsClient.claim_timeout_s``).
TIMEOUT_S = 5.0
#: How much longer than that a statement's answer is awaited before its connection is
#: given up: the server's own cancel normally answers first.
_ANSWER_MARGIN_S = 2.0

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

    def __init__(
        self,
        database: Database,
        *,
        max_batch: int = 1000,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        session = (
            "SET synchronous_commit = off",
            f"SET statement_timeout = {int(timeout_s * 1000)}",
        )
        self._connection = database.hold(autocommit=True, session=session)
        self._answer_timeout_s = timeout_s + _ANSWER_MARGIN_S
        self._since: float | None = None  # when the statement under way started
        self._watchdog: asyncio.TimerHandle | None = None
        self._group: GroupCommit[QueuedRun, bool] = GroupCommit(
            self._write, max_batch=max_batch, timeout_s=timeout_s
        )
        #: Statements written so far (each holds every row submitted while the one
        #: before it ran).
        self.statements = 0

    async def record(self, run: QueuedRun) -> bool:
        """Insert ``run``'s row; False when a row with its run id or key already exists.
        Raises :class:`TimeoutError` when it was not written within the timeout (it may
        still be, later)."""
        return await self._group.submit(run)

    async def record_many(self, runs: Sequence[QueuedRun]) -> list[bool]:
        """:meth:`record` for many rows at once (they share statements)."""
        return await self._group.submit_many(runs)

    async def aclose(self) -> None:
        """Give the kept connection back."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
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
        # Watched by one timer, armed when none is (see _watch): a timer per statement
        # (asyncio.timeout, or asyncpg's own) cost 4-14 µs of CPU each.
        loop = asyncio.get_running_loop()
        self._since = loop.time()
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._since + self._answer_timeout_s, self._watch, loop)
        try:
            answer = await self._connection.fetch(INSERT_QUEUED, rows)
        finally:
            self._since = None
        return {row[0] for row in answer}

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Abandon the connection under a statement unanswered for longer than the
        server's own timeout, else wake again when the current one would be."""
        self._watchdog = None
        since = self._since
        if since is None:
            return  # the next statement arms it again
        if loop.time() < since + self._answer_timeout_s:
            self._watchdog = loop.call_at(since + self._answer_timeout_s, self._watch, loop)
            return
        _log.warning(
            "queued-rows-connection-abandoned",
            waited_s=round(loop.time() - since, 1),
            message="the database did not answer the queued rows' statement; reconnecting",
        )
        self._connection.abandon()
