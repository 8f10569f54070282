"""Batched, coalescing writer of worker run events.

Writing each state change as its own transaction would cost two database round trips
per task; instead events are buffered in memory, coalesced per run (a run that starts
and finishes within one flush window is written once), and written by one background
task every ``flush_interval`` or as soon as ``batch_size`` events wait. ``record`` is
called on the event loop's thread (by the middlewares, also for tasks that run in the
executor): its counters, which acknowledgements wait for, are not locked.

The interval is short (20 ms by default) because a flush holds a database core while
PostgreSQL runs it: where the database shares cores with workers, the runs that
arrive meanwhile start late, so many small flushes make a shorter tail than a few big
ones. Under load that trade reverses (a statement's fixed cost is paid more often for
nothing), so after a flush of ``_BUSY_FLUSH`` events or more the next one waits five
intervals, or until ``batch_size`` events wait. For the same reason a flush on
PostgreSQL is one statement in autocommit, sent on the driver's own connection: the
worker's CPU per flush is a third of what SQLAlchemy and a transaction's BEGIN and
COMMIT took, and the message of a run that arrives meanwhile waits that much less.

Within its interval a flush also picks its moment. In a worker (where the receiver sets
``more_coming``) the second half of the interval ends at the first run that finishes
with nothing else in hand: the worker is between runs, so the database's share of the
cores goes to the flush while no run is being started. Only if no such moment comes
does the timer end it, as before; a busy worker flushes on its timer.

Coalescing keeps only a run's latest state, so the end of each attempt is also kept on
its own, once per (run, attempt), and written to ``run_attempts`` in the same
transaction as the runs: a retried run that fails and restarts within one window still
shows both attempts. (On PostgreSQL the statement leaves out the row of an attempt that
the run's own row records as succeeded.) An end recorded for an attempt that has already
ended in the buffer is a redelivered copy and is dropped: the first end stands, as the
database's guard decides across flushes.

A failed write keeps the events and retries with backoff, so a database outage delays
history instead of losing it; ``stop()`` flushes what is left. The recorder counts the
events it was given (``recorded``) and how many of the first of them are written
(``written``), and says when that advances (``on_written``): a worker acknowledges a
run's message only once ``written`` has passed the run's last event, so an outcome that
never reached the database (a killed worker, a database down at shutdown) leaves its
message pending, to be run and recorded again, instead of acknowledged and lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.repositories.runs import RunEvent, write_run_batch
from jobs_service.infrastructure.repositories.runs_bulk import run_batch_statement
from jobs_service.infrastructure.repositories.webhooks import WebhookOutcome, mark_finished

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.infrastructure.database import Database

__all__ = ["RunRecorder"]

_MAX_BACKOFF_S = 5.0
#: A flush at least this big means the worker is busy: the next one waits up to
#: ``_BUSY_STRETCH`` intervals (or ``batch_size`` events), so under load statements stay
#: large and few, while at moderate rates each flush is small and short.
_BUSY_FLUSH = 100
_BUSY_STRETCH = 5

#: Ended attempts waiting to be written, by (run_id, attempt), oldest first.
_Attempts = dict[tuple[str, int], dict[str, Any]]


class RunRecorder:
    """Buffers :class:`RunEvent` objects and writes them in batches."""

    def __init__(self, database: Database, *, batch_size: int, flush_interval_s: float) -> None:
        self._database = database
        # Kept between flushes: a pool checkout pings the database first, and that
        # ping and the reset after cost the database more than the flush's own write.
        # On PostgreSQL a flush is one statement, run on the driver's connection in
        # autocommit (see ``HeldConnection.fetch``); SQLite writes it in a transaction.
        self._one_statement = database.dialect == "postgresql"
        self._connection = database.hold(keyed=True, autocommit=self._one_statement)
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._pending: dict[str, RunEvent] = {}
        self._starting: dict[str, Callable[[], RunEvent]] = {}
        self._attempts: _Attempts = {}
        self._wake = asyncio.Event()
        self._flushed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._log = get_logger("jobs_service.run_recorder")
        self._writing = 0  # flushes under way (their events left the buffer)
        #: Whether the worker has other runs in hand besides the one finishing (its
        #: receiver sets it); unset, a flush waits for its timer alone.
        self.more_coming: Callable[[], bool] | None = None
        self._awaiting_lull = False  # the second half of an interval: flush at a lull
        self._loop_thread: int | None = None
        self._backing_off = False  # after a failed flush: only the timer wakes the flusher
        self._flush_lock = asyncio.Lock()
        #: Events recorded so far, and how many of the first of them are settled
        #: (written, or refused by the database for good): a message whose run's last
        #: event is number n may be acknowledged once ``written >= n``.
        self.recorded = 0
        self.written = 0
        #: Called with ``written`` after every flush that advanced it (the receiver
        #: acknowledges the messages waiting for it).
        self.on_written: Callable[[int], None] | None = None

    @property
    def pending(self) -> int:
        """Events waiting to be written (starts included)."""
        return len(self._pending) + len(self._starting)

    def record_start(self, run_id: str, build: Callable[[], RunEvent]) -> None:
        """Note that ``run_id`` started. Its ``running`` event is built only if the run
        is still running at the next flush: most runs end before, and their end is all
        that is written, so the start of a short run costs a dictionary insert."""
        self._starting[run_id] = build

    def record(self, event: RunEvent) -> None:
        """Queue an event; never blocks and never touches the database."""
        earlier = self._pending.get(event.run_id)
        if earlier is not None and earlier.is_finish and earlier.attempt >= event.attempt:
            # A redelivered copy of an attempt that already ended (or an older one): the
            # first end stands, as the database's guard would decide.
            return
        self.recorded += 1
        self._starting.pop(event.run_id, None)  # its end (or a later state) supersedes it
        if earlier is not None:
            del self._pending[event.run_id]
            event = event.merged_after(earlier)
        self._pending[event.run_id] = event
        if event.is_finish:
            # The first end of an attempt wins, as in the database: a redelivered copy
            # of an attempt that already ended cannot change its outcome.
            self._attempts.setdefault((event.run_id, event.attempt), event.attempt_row())
        if len(self._pending) >= self._batch_size and not self._backing_off:
            self._wake.set()
        elif self._awaiting_lull and event.is_finish and self._at_lull():
            self._awaiting_lull = False
            self._wake.set()

    def _at_lull(self) -> bool:
        """Whether the worker holds no other run now (asked on the loop's own thread
        only: elsewhere the wake-up would not reach the loop)."""
        more_coming = self.more_coming
        return (
            more_coming is not None
            and threading.get_ident() == self._loop_thread
            and not more_coming()
        )

    async def start(self) -> None:
        """Start the background flusher (idempotent)."""
        if self._task is None:
            self._stopping = False
            self._loop_thread = threading.get_ident()
            self._task = asyncio.create_task(self._run(), name="run-recorder")

    async def stop(self) -> None:
        """Stop the flusher and write everything still buffered."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            if self._pending or self._starting:
                await self.flush()
        except Exception as exc:  # noqa: BLE001 - logged; their messages are re-run
            # Not written, so their messages were not acknowledged either (the receiver
            # waits for ``written``): another worker runs them again and records them.
            self._log.error(
                "run-record-abandoned",
                events=self.pending,
                error_type=type(exc).__name__,
                error=str(exc)[:300],
            )
        finally:
            await self._connection.aclose()

    async def wait_flushed(self) -> None:
        """Return once everything recorded before the call has been written (a flush
        already under way included: its events have left the buffer, not yet the
        transaction)."""
        while self._unwritten:
            self._wake.set()
            async with self._flushed:
                if self._unwritten:  # again: a flush may have ended while we waited
                    await self._flushed.wait()

    @property
    def _unwritten(self) -> bool:
        return bool(self._pending or self._starting or self._writing)

    async def flush(self) -> int:
        """Write the buffered events now; returns how many were written."""
        async with self._flush_lock:
            starting, self._starting = self._starting, {}
            for build in starting.values():
                self.record(build())
            upto = self.recorded
            if not self._pending:
                self._settled(upto)
                return 0
            batch, self._pending = self._pending, {}
            attempts, self._attempts = self._attempts, {}
            events = list(batch.values())
            written = 0
            self._writing += 1
            try:
                for start in range(0, len(events), self._batch_size):
                    chunk = events[start : start + self._batch_size]
                    await self._write(chunk, attempts)
                    written = start + len(chunk)
            except Exception as exc:
                # Chunks already committed are done; the rest, with their attempts, is not.
                rest = events[written:]
                if _transient(exc):
                    self._requeue(rest, attempts)
                    raise
                # One event the database refuses (not JSON-able, out of range) must not
                # block every later event: write them one by one, drop only the refused.
                await self._write_each(rest, attempts)
            finally:
                self._writing -= 1
            self._settled(upto)
        async with self._flushed:
            self._flushed.notify_all()
        return len(events)

    def _settled(self, upto: int) -> None:
        """Every event recorded up to number ``upto`` is written (or refused for good)."""
        if upto > self.written:
            self.written = upto
            if self.on_written is not None:
                self.on_written(upto)

    async def _write(self, events: list[RunEvent], attempts: _Attempts) -> None:
        """Write ``events`` and the ended attempts of their runs in one transaction; the
        attempts written leave ``attempts``."""
        mine = _attempts_of(events, attempts)
        outcomes, now = _webhook_outcomes(events), datetime.now(UTC)
        if self._one_statement:
            await self._connection.fetch(
                *run_batch_statement(events, list(mine.values()), outcomes, now)
            )
        else:
            async with self._connection.begin() as connection:
                await write_run_batch(connection, events, list(mine.values()))
                await mark_finished(connection, outcomes, now)
        for key in mine:
            del attempts[key]

    async def _write_each(self, events: list[RunEvent], attempts: _Attempts) -> None:
        for index, event in enumerate(events):
            try:
                await self._write([event], attempts)
            except Exception as exc:
                if _transient(exc):
                    self._requeue(events[index:], attempts)
                    raise
                for key in _attempts_of([event], attempts):
                    del attempts[key]
                self._log.error(
                    "run-record-dropped",
                    run_id=event.run_id,
                    status=event.status,
                    error_type=type(exc).__name__,
                    error=str(exc)[:300],
                )

    def _requeue(self, events: list[RunEvent], attempts: _Attempts) -> None:
        # Newer events recorded during the failed write win; older ones fold into them.
        for event in events:
            newer = self._pending.pop(event.run_id, None)
            self._pending[event.run_id] = event if newer is None else newer.merged_after(event)
        # Attempt ends are not coalesced: the unwritten ones of the failed write come first.
        attempts = _attempts_of(events, attempts)
        self._attempts = attempts | {
            key: row for key, row in self._attempts.items() if key not in attempts
        }

    async def _run(self) -> None:
        backoff = self._interval
        while not self._stopping:
            if backoff == self._interval and self.more_coming is not None:
                await self._wait_for_lull(backoff)
            else:
                await self._wait(backoff)
            self._wake.clear()
            try:
                flushed = await self.flush()
            except Exception as exc:  # noqa: BLE001 - any database error must not kill the loop
                backoff = min(max(backoff * 2, 0.2), _MAX_BACKOFF_S)
                self._backing_off = True
                self._log.warning(
                    "run-record-failed",
                    error_type=type(exc).__name__,
                    error=str(exc)[:500],
                    pending=len(self._pending),
                    retry_in_s=backoff,
                )
            else:
                self._backing_off = False
                busy = flushed >= _BUSY_FLUSH
                backoff = self._interval * (_BUSY_STRETCH if busy else 1)

    async def _wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=timeout_s)

    async def _wait_for_lull(self, interval_s: float) -> None:
        """Wait half the interval, then until a run ends with nothing else in hand
        (see the module docstring), the interval's end at the latest."""
        await self._wait(interval_s / 2)
        if self._wake.is_set():
            return
        self._awaiting_lull = True
        try:
            await self._wait(interval_s / 2)
        finally:
            self._awaiting_lull = False


def _attempts_of(events: list[RunEvent], attempts: _Attempts) -> _Attempts:
    """The entries of ``attempts`` that belong to the runs of ``events``.

    Every ended attempt has its run among the pending events (recording an attempt's end
    records its run's event too), so the runs' chunks carry all of them.
    """
    runs = {event.run_id for event in events}
    return {key: row for key, row in attempts.items() if key[0] in runs}


def _transient(exc: BaseException) -> bool:
    """Anything but a refusal of the data itself is retried (an outage, a missing
    migration); only values the driver or database rejects are poison (and values that
    cannot even be encoded: a TypeError or ValueError before the statement is sent)."""
    if isinstance(exc, (DataError, IntegrityError, TypeError, ValueError)):
        return False
    if isinstance(exc, DBAPIError):
        # asyncpg's refusals arrive as plain DBAPIError: the SQLSTATE class tells data
        # exceptions (22) and constraint violations (23) from outages.
        state = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", "") or "")
        return not state.startswith(("22", "23"))
    return not isinstance(exc, StatementError)


def _webhook_outcomes(events: list[RunEvent]) -> list[WebhookOutcome]:
    """A webhook event is processed when its run succeeds, failed when it fails for good
    (failed, dead or cancelled)."""
    return [
        (
            event.webhook_event_id,
            "processed" if event.status == "succeeded" else "failed",
            event.run_id,
            event.error,
        )
        for event in events
        if event.webhook_event_id is not None
        and event.is_finish
        and event.status in ("succeeded", "failed", "dead", "cancelled")
    ]
