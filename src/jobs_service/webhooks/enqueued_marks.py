"""Marking events ``enqueued`` in the background, off the request path.

``enqueued`` tells the relay that an event's run reached the broker, so it must not be
sent again even while it waits in the stream. Writing it in the request would cost each
webhook a second transaction (and a second WAL flush) after its send; the sender does
not need it to get its 202, because the event and its queued run are already committed.
So the ids of sent events are collected here and written every ``interval_s`` in one
statement.

Why that cannot double-send a run: the relay only picks events still ``accepted`` after
``webhooks.relay_after_s`` (5 s by default, far more than ``interval_s``); the gateway's
own relay writes what is pending here and holds further writes while it looks
(:meth:`EnqueuedMarks.settled`), and leaves alone what is pending meanwhile and the runs
of a batch still being committed or sent. A write that fails (the database is down) keeps
its ids and is retried; ids past ``max_pending`` are dropped with a warning — the relay
then sends those runs again, which at-least-once delivery allows (same run id, so one
run, never two).
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.background import start_detached
from jobs_service.infrastructure.database import describe_database_error
from jobs_service.infrastructure.repositories import webhooks as repo

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Container, Iterable

    from jobs_service.infrastructure.database import Database

__all__ = ["EnqueuedMarks"]

_log = get_logger("jobs_service.webhooks")


class EnqueuedMarks:
    """Collects events whose runs were sent, as ``(event id, run id)``; writes them
    ``enqueued`` in batches."""

    def __init__(
        self, database: Database, *, interval_s: float = 0.1, max_pending: int = 100_000
    ) -> None:
        # Its own kept connection: ten writes a second through the pool would each pay
        # a pre-ping and a reset.
        self._connection = database.hold()
        self._interval = interval_s
        self._max_pending = max_pending
        self._pending: dict[int, str] = {}  # event id -> the run that was sent
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Events waiting to be written."""
        return len(self._pending)

    def add(self, sent: Iterable[tuple[int, str]]) -> None:
        """Queue ``(event id, run id)`` pairs for the next write (never blocks, never
        touches the database)."""
        self._pending.update(sent)
        if len(self._pending) > self._max_pending:
            dropped = len(self._pending) - self._max_pending
            for _ in range(dropped):
                self._pending.popitem()
            _log.warning(
                "webhook-marks-dropped",
                events=dropped,
                message="the relay will send these runs again (same run ids)",
            )
        if self._task is None and not self._closed:
            self._task = start_detached(self._run(), name="webhook-enqueued-marks")

    async def flush(self) -> None:
        """Write what is pending now; on failure the ids stay pending and it raises."""
        async with self._lock:
            await self._write_pending()

    @asynccontextmanager
    async def settled(self) -> AsyncIterator[Container[int]]:
        """Write what is pending, then hold further writes while the block runs.

        For the relay: whatever it reads from the database inside the block, an event
        whose run was sent is either marked there or in the yielded container (ids added
        meanwhile appear in it), never in between — which a write finishing during the
        block could otherwise make it.
        """
        async with self._lock:
            await self._write_pending()
            yield self._pending

    async def aclose(self) -> None:
        """Stop the background writes and write what is left (once; failures are logged)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - shutting down: the relay covers them
            _log.warning(
                "webhook-marks-unwritten", events=self.pending, error=describe_database_error(exc)
            )
        await self._connection.aclose()

    async def _write_pending(self) -> None:
        """Under the lock: one statement for every pending id."""
        if not self._pending:
            return
        sent, self._pending = self._pending, {}
        try:
            async with self._connection.begin() as connection:
                await repo.mark_enqueued(connection, sorted(sent.items()), datetime.now(UTC))
        except BaseException:
            self._pending = sent | self._pending
            raise

    async def _run(self) -> None:
        failures = 0
        try:
            while self._pending:
                # After a failure back off (0.5 s, 1 s, … 5 s): the database is in trouble.
                await asyncio.sleep(
                    min(0.5 * 2 ** (failures - 1), 5.0) if failures else self._interval
                )
                try:
                    await self.flush()
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - kept and retried
                    failures += 1
                    _log.warning(
                        "webhook-marks-failed",
                        events=self.pending,
                        error=describe_database_error(exc),
                    )
        finally:
            self._task = None
