"""The producer API's entry point, :class:`JobsClient`: it validates runs and hands each
to the path that queues it (keyed, keyless, a batch, a resend, an operator's action).

Those paths call back through the client for its public methods (``send``, ``resend``,
``task``…) and its ``claim_timeout_s``, rather than hold copies taken at start: a
``send`` or a timeout replaced on one client instance is then the one every path of
that client takes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Unpack

from jobs_service.client._claims import KeyClaims
from jobs_service.client._errors import EnqueueError
from jobs_service.client._keyless import KeylessSubmits
from jobs_service.client._operator import OperatorActions
from jobs_service.client._replays import Replays
from jobs_service.client._requests import RunOptions, prepare_batch, prepare_request
from jobs_service.client._resends import Resender
from jobs_service.client._sends import forget_unsent, send_to_broker, serialise_runs
from jobs_service.infrastructure.models import TERMINAL_STATUSES
from jobs_service.infrastructure.repositories import runs
from jobs_service.tasks.registry import find_task

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from taskiq import AsyncBroker

    from jobs_service.client._requests import RunRequest, Submission
    from jobs_service.client._resends import Resent
    from jobs_service.client._sends import _Wire
    from jobs_service.core.ports import Resends
    from jobs_service.infrastructure.models import JobRun
    from jobs_service.infrastructure.runtime import Runtime
    from jobs_service.tasks.registry import TaskInfo

__all__ = ["JobsClient"]


class JobsClient:
    """Enqueues runs on ``broker`` and records them through ``runtime``'s database."""

    #: How long a run with an Idempotency-Key may wait for its turn, for the broker, and
    #: for another request holding its key (see ``KeyClaims.submit``).
    claim_timeout_s = 5.0

    def __init__(self, broker: AsyncBroker, runtime: Runtime) -> None:
        self._broker = broker
        self._database = runtime.database
        self._teams_channels = frozenset(runtime.settings.channels.teams)
        self._replays = Replays(self, self._database)
        self._claims = KeyClaims(
            self, self._database, self._replays, pool_size=runtime.settings.database.pool_size
        )
        self._keyless = KeylessSubmits(self, self._database, runtime.queued_run_writer())
        self._resender = Resender(self, self._database)
        self._operator = OperatorActions(self, self._database, runtime.settings.redis_prefix)

    @property
    def broker(self) -> AsyncBroker:
        """The broker this client sends to."""
        return self._broker

    def task(self, name: str) -> TaskInfo:
        """The registered task ``name`` (raises ``UnknownTaskError``)."""
        return find_task(self._broker, name)

    async def enqueue(
        self, task: str, kwargs: Mapping[str, Any] | None = None, **options: Unpack[RunOptions]
    ) -> str:
        """Validate ``kwargs`` against the task, queue one run and return its run id."""
        return (await self.submit(task, kwargs, **options)).run_id

    async def submit(
        self, task: str, kwargs: Mapping[str, Any] | None = None, **options: Unpack[RunOptions]
    ) -> Submission:
        """Like :meth:`enqueue`, but tells whether an idempotent replay happened."""
        request = self.prepare(task, kwargs, **options)
        idempotency_key = request.idempotency_key
        if idempotency_key is not None:
            existing = await self._replays.existing_for(request)
            if existing is not None:
                return existing
        wire = await self.serialise([request])  # a message that cannot be sent is never queued
        if idempotency_key is not None:
            return await self._claims.submit(request, wire)
        return await self._keyless.submit(request, wire)

    async def enqueue_many(
        self,
        task: str,
        kwargs_list: Sequence[Mapping[str, Any]],
        *,
        source: str = "api",
    ) -> list[str]:
        """Queue one run per kwargs mapping; returns their run ids in order.

        Every item is validated before anything is queued, so a bad item rejects the
        whole batch. The runs then go out in chunks, one broker round trip each: a first
        one of ``FIRST_CHUNK`` runs, so a worker starts on them while the rest are still
        encoded, then chunks of ``SEND_CHUNK``. On PostgreSQL a chunk's ``queued`` rows
        are written after its messages are sent, while the next chunk is encoded, as for
        a single run (see ``KeylessSubmits._submit_keyless``); the call returns once
        every row is written. On SQLite each chunk's rows come first. If the broker fails
        midway, :class:`EnqueueError` says which runs were queued; if it does not confirm
        a chunk, :class:`EnqueueUnconfirmedError` says which were queued and which may be.

        A long-running producer should freeze its heap once started
        (:func:`jobs_service.infrastructure.heap.settle_heap`): a thousand runs held
        alive otherwise set off a full collection of everything imported, a pause of
        about 100 ms.
        """
        options: RunOptions = {"source": source}
        requests = prepare_batch(
            self.task(task), kwargs_list, options, teams_channels=self._teams_channels
        )
        return await self._keyless.enqueue_many(requests)

    def prepare(
        self,
        task: str,
        kwargs: Mapping[str, Any] | None = None,
        *,
        send_once: bool = False,
        **options: Unpack[RunOptions],
    ) -> RunRequest:
        """Validate a run without recording or sending it (for callers that record it
        in their own transaction, such as the scheduler's fire claims). ``send_once``:
        the caller may send it again (an outbox): each send adds it once at most."""
        request = prepare_request(
            self.task(task), kwargs, options, teams_channels=self._teams_channels
        )
        request.send_once = request.send_once or send_once
        return request

    async def serialise(self, requests: Sequence[RunRequest]) -> list[_Wire]:
        """Run the producer middlewares and encode each message for the broker."""
        return await serialise_runs(self._broker, requests)

    async def send(
        self, requests: Sequence[RunRequest], wire: Sequence[_Wire] | None = None
    ) -> None:
        """Send recorded runs to the broker (one pipelined round trip on Redis); runs
        marked ``send_once`` are added once at most, however often they are sent.

        Raises :class:`EnqueueError` when the broker refuses (nothing was queued), and
        :class:`EnqueueUnconfirmedError` when it took the send and did not answer (the
        runs may be queued); the rows stay as they are.
        """
        wire = wire if wire is not None else await self.serialise(requests)
        await send_to_broker(self._broker, requests, wire)

    async def send_or_forget(
        self, requests: Sequence[RunRequest], wire: Sequence[_Wire] | None = None
    ) -> None:
        """Send; if the broker refuses, or does not confirm, delete the still-queued rows
        and re-raise (a run whose message did land writes its row when it runs)."""
        try:
            await self.send(requests, wire)
        except EnqueueError:
            await forget_unsent(self._database, requests)
            raise

    async def resend(self, run_ids: Sequence[str]) -> Resent:
        """Send again the runs that are still ``queued`` (same run ids).

        For outboxes: a run recorded in a transaction whose message may not have reached
        the broker (the sender died, or the broker refused or timed out). Each is added
        once at most per queueing (``send_once``): a run whose earlier send did reach
        the broker, if that send was marked ``send_once`` too, is not added twice. Runs
        a worker already started are reported, not sent; runs that can never be sent
        (their row was deleted, their task is no longer registered) are reported with
        the error. Runs marked unconfirmed are unmarked once sent or started. Raises
        :class:`EnqueueError` if the broker refuses (or
        :class:`EnqueueUnconfirmedError`: it did not answer).
        """
        return await self._resender.resend(run_ids)

    async def resend_unconfirmed(self, before: datetime, *, limit: int = 500) -> Resends:
        """Send again (:meth:`resend`) up to ``limit`` runs marked unconfirmed before
        ``before``, oldest first: a keyed submit or an operator's retry whose send the
        broker never confirmed, and that nobody repeated. Each is added once at most,
        so a run whose first send did land is not queued twice."""
        return await self._resender.resend_unconfirmed(before, limit=limit)

    async def retry(self, run_id: str) -> JobRun:
        """Queue a failed, dead or cancelled run again: same run id, attempt N+1, its
        own source; its status is ``queued`` until a worker starts it.

        Raises :class:`RunNotFoundError`, :class:`RunStateError`, ``UnknownTaskError``
        (its task is gone), ``InvalidKwargsError`` (its arguments no longer fit the
        task) or :class:`EnqueueError` (nothing changed then). A send the broker did not
        confirm leaves the run ``queued``, marked unconfirmed (its message may be in the
        stream): the ``resend_unconfirmed_runs`` job sends it again, once at most, and
        :class:`EnqueueUnconfirmedError` says so.
        """
        return await self._operator.retry(run_id)

    async def cancel(self, run_id: str, *, by: str) -> JobRun:
        """Cancel a queued, retrying or running run on behalf of ``by``.

        The cancellation is announced to the workers before the run is marked
        ``cancelled``: if the database write fails the run still never runs, and a
        repeated cancel completes the record; the other order could let it run while
        recorded cancelled. A worker that hears the announcement may record the run
        cancelled first; that is this cancel's outcome, not a conflict. Raises
        :class:`RunNotFoundError`, :class:`RunStateError` or :class:`EnqueueError` (the
        broker is unreachable; nothing was cancelled).
        """
        return await self._operator.cancel(run_id, by=by)

    async def get_run(self, run_id: str) -> JobRun | None:
        """The run's current record, or None."""
        async with self._database.sessions() as session:
            return await runs.get_run(session, run_id=run_id)

    async def wait_for(
        self, run_id: str, *, timeout_s: float = 60.0, poll_s: float = 0.1
    ) -> JobRun:
        """Poll until the run reaches a final state; raises ``TimeoutError``."""
        async with asyncio.timeout(timeout_s):
            while True:
                run = await self.get_run(run_id)
                if run is not None and run.status in TERMINAL_STATUSES:
                    return run
                await asyncio.sleep(poll_s)
