"""Runs without an Idempotency-Key, one or a batch: on PostgreSQL sent first and
recorded right after (see :meth:`KeylessSubmits._submit_keyless`); on SQLite recorded
first, and the rows deleted again if the broker refuses the send."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from jobs_service.client._errors import EnqueueError, EnqueueUnconfirmedError
from jobs_service.client._requests import Submission
from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.repositories import runs

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from jobs_service.client._client import JobsClient
    from jobs_service.client._requests import RunRequest
    from jobs_service.client._sends import _Wire
    from jobs_service.infrastructure.database import Database
    from jobs_service.infrastructure.queued_runs import QueuedRunWriter

__all__ = ["FIRST_CHUNK", "SEND_CHUNK", "KeylessSubmits"]

_log = get_logger("jobs_service.client")

#: Runs of a batch recorded and sent together (see ``JobsClient.enqueue_many``).
SEND_CHUNK = 250
#: Runs in a batch's first chunk: few, so a worker starts on them sooner.
FIRST_CHUNK = 100


class KeylessSubmits:
    """Queues ``client``'s runs that have no Idempotency-Key; their ``queued`` rows go
    through ``writer`` (PostgreSQL), or straight to ``database`` when there is none."""

    def __init__(
        self, client: JobsClient, database: Database, writer: QueuedRunWriter | None
    ) -> None:
        self._client = client
        self._database = database
        self._queued_runs = writer

    async def submit(self, request: RunRequest, wire: Sequence[_Wire]) -> Submission:
        if self._queued_runs is not None:
            return await self._submit_keyless(self._queued_runs, request, wire)
        if not await self._record_queued(request):
            msg = f"run {request.run_id} could not be recorded: its row already exists"
            raise EnqueueError(msg)
        await self._client.send_or_forget([request], wire)
        return Submission(request.run_id, "queued", replayed=False)

    async def _submit_keyless(
        self, writer: QueuedRunWriter, request: RunRequest, wire: Sequence[_Wire]
    ) -> Submission:
        """Send a run without an idempotency key, then record its ``queued`` row.

        Nothing is claimed by such a row, and it commits asynchronously anyway (see
        :mod:`~jobs_service.infrastructure.queued_runs`), so the send need not wait for
        it. Nor should the two go out together: the database's work for the row then
        competes for the CPU with Redis and the worker delivering that same run, where
        after the send's reply it mostly overlaps the run's start instead (on two
        shared cores, W2's p50 dropped from about 1.1 to 0.7 ms). The caller still gets
        the run id only once both are done. If the send fails, nothing was written and
        the error is raised: :class:`EnqueueUnconfirmedError` when the message may be
        queued all the same (no row is written for it then: if it is queued, the worker
        that runs it writes the row). If only the row fails (the database is down or
        does not answer within 5 s, or the worker wrote the run first), the run is
        queued all the same and the worker that runs it writes its full row (run
        recording never loses a state).
        """
        await self._client.send([request], wire)
        await self._record_sent(writer, [request])
        return Submission(request.run_id, "queued", replayed=False)

    async def enqueue_many(self, requests: Sequence[RunRequest]) -> list[str]:
        """Queue a validated batch chunk by chunk (see :meth:`JobsClient.enqueue_many`)."""
        queued: list[str] = []
        recording: list[asyncio.Task[None]] = []
        try:
            for part in _chunks(requests):
                try:
                    await self._queue_chunk(part, recording)
                except EnqueueUnconfirmedError as exc:
                    unsent = len(requests) - len(queued) - len(part)
                    msg = (
                        f"{len(queued)} of {len(requests)} runs were queued; the broker did "
                        f"not confirm the next {len(part)} ({exc.__cause__}): they may have "
                        f"been queued, or not; the {unsent} after them were not sent"
                    )
                    raise EnqueueUnconfirmedError(
                        msg, run_ids=exc.run_ids, queued=queued
                    ) from exc.__cause__
                except Exception as exc:
                    if not queued:
                        raise
                    msg = f"{len(queued)} of {len(requests)} runs were queued, then: {exc}"
                    raise EnqueueError(msg, queued=queued) from exc
                queued.extend(request.run_id for request in part)
        finally:
            await asyncio.gather(*recording)
        return queued

    async def _queue_chunk(
        self, requests: Sequence[RunRequest], recording: list[asyncio.Task[None]]
    ) -> None:
        """Send one chunk of a batch; its rows are written now (SQLite) or by a task
        added to ``recording`` (PostgreSQL)."""
        wire = await self._client.serialise(requests)
        if self._queued_runs is None:
            await self._record_many(requests)
            await self._client.send_or_forget(requests, wire)
            return
        await self._client.send(requests, wire)
        rows = self._record_sent(self._queued_runs, requests)
        recording.append(asyncio.create_task(rows, name="record-queued-rows"))

    @staticmethod
    async def _record_sent(writer: QueuedRunWriter, requests: Sequence[RunRequest]) -> None:
        """Write the ``queued`` rows of runs already sent. A failure is logged, not
        raised: the runs are queued, and the worker that runs each writes its row. That
        includes a database that does not write them within the writer's timeout (5 s,
        as ``claim_timeout_s``): the caller is answered without them."""
        try:
            await writer.record_many([request.queued_row() for request in requests])
        except Exception as exc:  # noqa: BLE001 - the runs are queued; their rows come later
            _log.warning(
                "queued-row-deferred",
                run_id=requests[0].run_id,
                runs=len(requests),
                task=requests[0].info.name,
                error=f"{type(exc).__name__}: {exc}",
            )

    async def _record_queued(self, request: RunRequest) -> bool:
        """Insert a keyless run's ``queued`` row (SQLite); False if its id is taken."""
        try:
            async with self._database.engine.begin() as connection:
                await runs.insert_queued_runs(connection, [request.queued_row()])
        except IntegrityError:
            return False
        return True

    async def _record_many(self, requests: Sequence[RunRequest]) -> None:
        """Insert the ``queued`` rows of keyless runs in one transaction (SQLite: on
        PostgreSQL they follow their send, see :meth:`_record_sent`)."""
        async with self._database.engine.begin() as connection:
            await runs.insert_queued_runs(connection, [r.queued_row() for r in requests])


def _chunks(requests: Sequence[RunRequest]) -> Iterator[Sequence[RunRequest]]:
    """A batch's runs as sent: ``FIRST_CHUNK`` of them, then ``SEND_CHUNK`` at a time."""
    if requests:
        yield requests[:FIRST_CHUNK]
    for start in range(FIRST_CHUNK, len(requests), SEND_CHUNK):
        yield requests[start : start + SEND_CHUNK]
