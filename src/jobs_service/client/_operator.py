"""An operator's actions on a recorded run: retry a finished one, cancel a pending or
running one. Each checks the run's status and changes it with a conditional write, so
two operators (or an operator and a worker) acting at once cannot both succeed."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobs_service.client._errors import (
    EnqueueError,
    EnqueueUnconfirmedError,
    RunNotFoundError,
    RunStateError,
)
from jobs_service.client._requests import RunRequest
from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.cancellations import Cancellation
from jobs_service.infrastructure.repositories import runs, unconfirmed_sends
from jobs_service.middlewares.cancellation import announce_cancellation

if TYPE_CHECKING:
    from jobs_service.client._client import JobsClient
    from jobs_service.infrastructure.database import Database
    from jobs_service.infrastructure.models import JobRun

__all__ = ["CANCELLABLE_STATUSES", "RETRYABLE_STATUSES", "OperatorActions"]

_log = get_logger("jobs_service.client")

#: Runs an operator may retry, and runs an operator may cancel.
RETRYABLE_STATUSES = ("failed", "dead", "cancelled")
CANCELLABLE_STATUSES = ("queued", "running", "retrying")


class OperatorActions:
    """Retries and cancels ``client``'s runs, as ``database`` records them; cancellations
    are announced under ``redis_prefix``."""

    def __init__(self, client: JobsClient, database: Database, redis_prefix: str) -> None:
        self._client = client
        self._database = database
        self._redis_prefix = redis_prefix

    async def retry(self, run_id: str) -> JobRun:
        run = await self._run_in(run_id, RETRYABLE_STATUSES, "retried")
        info = self._client.task(run.task)
        request = RunRequest(
            info=info,
            kwargs=info.validate_kwargs(run.kwargs),
            source=run.source,
            run_id=run.run_id,
            schedule_id=run.schedule_id,
            scheduled_for=run.scheduled_for,
            webhook_event_id=run.webhook_event_id,
            deliver_to=run.deliver_to,
            # A cancellation covers attempts up to the stored one (see Cancellation).
            attempt=run.attempt + 1,
            send_once=True,
        )
        wire = await self._client.serialise([request])
        # Claim the run first, so two concurrent retries cannot both send it.
        async with self._database.engine.begin() as connection:
            claimed = await runs.requeue_finished(connection, run, queued_at=request.queued_at)
        if not claimed:  # another operator retried it first
            now = await self._existing(run_id)
            raise RunStateError(run_id, now.status, "retried", RETRYABLE_STATUSES)
        # The run as this retry queued it, read before it is sent: once sent, a worker
        # may start it, and even end it, before a read after the send comes back.
        queued = await self._existing(run_id)
        try:
            await self._client.send([request], wire)
        except EnqueueUnconfirmedError as exc:
            raise await self._keep_retry_unconfirmed(run_id, exc) from exc
        except EnqueueError:
            async with self._database.engine.begin() as connection:
                await runs.restore_finished(connection, run)
            raise
        return queued

    async def _keep_retry_unconfirmed(
        self, run_id: str, cause: EnqueueUnconfirmedError
    ) -> EnqueueUnconfirmedError:
        """Leave a retried run whose send is unconfirmed ``queued``, marked so (its
        message may be in the stream: restored to its old status, it would run while
        recorded as ended); the error to raise."""
        reason = cause.__cause__ or cause
        try:
            async with self._database.engine.begin() as connection:
                await unconfirmed_sends.mark_unconfirmed(connection, [run_id], at=datetime.now(UTC))
        except Exception as exc:  # noqa: BLE001 - it stays queued; only the mark is missing
            _log.error("retry-unconfirmed-unmarked", run_id=run_id, error=str(exc)[:300])
            msg = (
                f"the broker did not confirm the retry of run {run_id} ({reason}): it may "
                "have been queued, or not; the run is recorded as queued"
            )
            return EnqueueUnconfirmedError(msg, run_ids=[run_id])
        msg = (
            f"the broker did not confirm the retry of run {run_id} ({reason}): the run "
            "stays queued and will be queued once, by the service itself within a few "
            "minutes of the broker answering again"
        )
        return EnqueueUnconfirmedError(msg, run_ids=[run_id], recorded=True)

    async def cancel(self, run_id: str, *, by: str) -> JobRun:
        run = await self._run_in(run_id, CANCELLABLE_STATUSES, "cancelled")
        for _ in range(3):
            # A running attempt is the one cancelled; otherwise the next one, which will
            # now never start.
            attempt = run.attempt if run.status == "running" else run.attempt + 1
            token = Cancellation(run.run_id, upto=attempt, by=by, at=time.time())
            try:
                await announce_cancellation(self._client.broker, self._redis_prefix, token)
            except Exception as exc:
                msg = f"the broker did not take the cancellation ({type(exc).__name__}: {exc})"
                raise EnqueueError(msg) from exc
            error = {"type": "Cancelled", "message": f"cancelled by {by}"}
            async with self._database.engine.begin() as connection:
                done = await runs.mark_cancelled(
                    connection, run, attempt=attempt, error=error, at=datetime.now(UTC)
                )
            if done:
                return await self._existing(run_id)
            run = await self._existing(run_id)
            if (
                run.status == "cancelled"
                and run.attempt == attempt
                and (run.error or {}).get("message") == error["message"]
            ):
                # The worker heard the announcement and recorded this cancellation
                # before we did: the cancel has happened. (Another operator's cancel
                # that got there first is theirs: this one is a conflict, as it would
                # be a moment later.)
                return run
            if run.status not in CANCELLABLE_STATUSES:
                raise RunStateError(run_id, run.status, "cancelled", CANCELLABLE_STATUSES)
        # It kept changing under us (a worker starting and ending attempts meanwhile).
        raise RunStateError(run_id, run.status, "cancelled", CANCELLABLE_STATUSES)

    async def _existing(self, run_id: str) -> JobRun:
        run = await self._client.get_run(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        return run

    async def _run_in(self, run_id: str, statuses: tuple[str, ...], action: str) -> JobRun:
        """The run, if its status is one of ``statuses``; :class:`RunStateError` if not."""
        run = await self._existing(run_id)
        if run.status not in statuses:
            raise RunStateError(run_id, run.status, action, statuses)
        return run
