"""The worker side of run progress: a coalescing writer of ``job_runs.progress``.

A task may report progress thousands of times; the database sees at most one statement
per ``flush_interval`` per worker process, holding the latest report of every run that
reported since the last one (older reports of a run are simply replaced in memory). The
first report after a quiet period is written at once, so a slow task's progress shows
without delay; bursts are what gets coalesced.

The last value is never lost to coalescing: the run context keeps it and the run's end
event carries it to the run recorder, which writes it with the final status in the same
statement. An interim write that arrives after that is refused by the statement's guard
(:mod:`~jobs_service.infrastructure.repositories.run_progress`), so the order of the two
writers' connections does not matter.

Nothing here runs for a run that never reports: the writer is built (and its flusher
task started) on the first report in the process, and :class:`BrokerProgressSink` is one
object per broker, assigned to each run context.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.background import start_detached, stop_task
from jobs_service.infrastructure.repositories.run_progress import ProgressRow, write_progress
from jobs_service.infrastructure.runtime import runtime_of

if TYPE_CHECKING:
    from taskiq import AsyncBroker

    from jobs_service.core.run_context import RunContext
    from jobs_service.infrastructure.database import Database

__all__ = ["BrokerProgressSink", "ProgressWriter"]

_RESOURCE = "progress-writer"
_log = get_logger("jobs_service.progress")
_MAX_BACKOFF_S = 5.0
#: Runs whose unwritten progress is kept (far more than a worker runs at once).
_MAX_PENDING = 10_000


class ProgressWriter:
    """Keeps each run's latest progress and writes all of them in one statement, at most
    once per ``interval_s`` (a :class:`~jobs_service.core.progress.ProgressSink`)."""

    def __init__(self, database: Database, *, interval_s: float) -> None:
        # Progress is advisory and the run's end rewrites it, so a commit need not wait
        # for the disk (PostgreSQL only; SQLite has no such setting).
        session = ("SET synchronous_commit = off",) if database.dialect == "postgresql" else ()
        self._connection = database.hold(autocommit=True, session=session, keyed=True)
        self._interval = interval_s
        self._pending: dict[str, tuple[int, dict[str, Any]]] = {}
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Statements written so far.
        self.statements = 0

    @property
    def pending(self) -> int:
        """Runs whose latest progress is not written yet."""
        return len(self._pending)

    def report(self, run: RunContext) -> None:
        """Replace ``run``'s unwritten progress with its latest; never blocks."""
        if run.progress is None or self._closed:
            return
        self._pending[run.run_id] = (run.attempt, run.progress)
        if len(self._pending) > _MAX_PENDING:
            # A long database outage: drop the oldest interim value (each run's end
            # still carries its last one).
            del self._pending[next(iter(self._pending))]
        self._dirty.set()
        if self._task is None:
            self._task = start_detached(self._run(), name="progress-writer")

    async def flush(self) -> int:
        """Write what is pending now; returns the rows the database changed. Runs whose
        row was busy (see :func:`write_progress`) stay pending for the next write,
        unless a newer report replaced them meanwhile."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        rows: list[ProgressRow] = [(run_id, *entry) for run_id, entry in batch.items()]
        try:
            async with self._connection.begin() as connection:
                written = await write_progress(connection, rows)
        except BaseException:
            # Reports made during the failed write are newer: they win.
            self._pending = batch | self._pending
            raise
        self.statements += 1
        if written.busy:
            self._pending = {run_id: batch[run_id] for run_id in written.busy} | self._pending
            self._dirty.set()
        return written.changed

    async def _run(self) -> None:
        backoff = self._interval
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - an outage must not end the loop
                backoff = min(max(backoff * 2, self._interval), _MAX_BACKOFF_S)
                self._dirty.set()  # what failed is pending again
                _log.warning(
                    "progress-write-failed",
                    error_type=type(exc).__name__,
                    error=str(exc)[:300],
                    pending=len(self._pending),
                    retry_in_s=backoff,
                )
            else:
                backoff = self._interval
            # The rate limit: reports made meanwhile wait and are coalesced.
            await asyncio.sleep(backoff)

    async def aclose(self) -> None:
        """Stop the flusher, write what is pending (best effort: the runs' ends carry
        their final progress anyway) and give the connection back."""
        self._closed = True
        task, self._task = self._task, None
        await stop_task(task)
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - closing must not fail over advisory data
            _log.warning("progress-write-failed", error_type=type(exc).__name__)
        finally:
            await self._connection.aclose()


class BrokerProgressSink:
    """The sink every run context of a worker gets: finds the process's
    :class:`ProgressWriter` (building it on the first report) through the runtime
    attached to ``broker``, so nothing is resolved for runs that never report."""

    def __init__(self, broker: AsyncBroker) -> None:
        self._broker = broker

    def report(self, run: RunContext) -> None:
        """Hand ``run``'s latest progress to this process's writer.

        Never raises: a task must not fail because its progress could not be shown (the
        run's end still records the last value, which the context keeps).
        """
        try:
            runtime = runtime_of(self._broker)
            interval_s = runtime.settings.runs.progress_flush_interval_ms / 1000
            writer = runtime.resource(
                _RESOURCE, lambda: ProgressWriter(runtime.database, interval_s=interval_s)
            )
            writer.report(run)
        except Exception as exc:  # noqa: BLE001 - see above
            _log.warning(
                "progress-report-dropped",
                run_id=run.run_id,
                error_type=type(exc).__name__,
                error=str(exc)[:300],
            )
