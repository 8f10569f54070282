"""Runs with an Idempotency-Key: the key is claimed and the run sent in one transaction,
so the key becomes visible only once its run is really queued (see
:meth:`KeyClaims.submit`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from jobs_service.client._errors import EnqueueError, EnqueueUnconfirmedError
from jobs_service.client._requests import Submission
from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.repositories import runs, unconfirmed_sends

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction

    from jobs_service.client._client import JobsClient
    from jobs_service.client._replays import Replays
    from jobs_service.client._requests import RunRequest
    from jobs_service.client._sends import _Wire
    from jobs_service.infrastructure.database import Database

__all__ = ["KeyClaims"]

_log = get_logger("jobs_service.client")

#: PostgreSQL's ``lock_not_available``: a ``lock_timeout`` ran out.
_LOCK_NOT_AVAILABLE = "55P03"
#: A repeat waits for the key this much longer than the holder's send may take.
_CLAIM_WAIT_MARGIN_S = 2.0


class KeyClaims:
    """Queues ``client``'s runs that have an Idempotency-Key, each holding one of
    ``database``'s pooled connections while it is sent."""

    def __init__(
        self, client: JobsClient, database: Database, replays: Replays, *, pool_size: int
    ) -> None:
        self._client = client
        self._database = database
        self._replays = replays
        # Runs with an Idempotency-Key each hold a pooled connection while they are sent
        # (see submit): never more than half the pool at once.
        self._claiming = asyncio.Semaphore(max(1, pool_size // 2))

    async def submit(self, request: RunRequest, wire: Sequence[_Wire]) -> Submission:
        """Claim the run's idempotency key and send the run, in one transaction.

        The row is inserted, the message sent, then the row committed. Until the commit
        no one else sees the key: a concurrent request with the same key waits on the
        unique index, then replays a run that is really queued, or, if this send
        failed and rolled the row back, claims the key itself. Committed first and
        sent after, a repeat arriving during the send was told "queued" about a run
        whose send then failed and whose row was deleted; and a process killed between
        the two left a row that every repeat replayed and nothing ever sent.

        The price is a database connection held while the broker takes the message, so
        it is bounded: at most half the pool's connections claim at once (beyond
        that a submit waits its turn, for ``claim_timeout_s`` at most), the send gets
        ``claim_timeout_s``, and on PostgreSQL a repeat waits that long (and a little
        more) for the key. Each bound ends in :class:`EnqueueError` (503, retry
        later).

        A send whose outcome is unknown (it timed out, or lost its connection after the
        message was written: the message may be in the stream, or land there when a
        stalled Redis resumes) must neither free the key, or a repeat queues a second
        run, nor be taken for a refusal. So the claim is committed all the same, marked
        unconfirmed (:meth:`_keep_unconfirmed`), and :class:`EnqueueUnconfirmedError`
        raised; a repeat then replays this run and sends it again, and so does the
        ``resend_unconfirmed_runs`` job if nobody repeats. A keyed run's sends add its
        message once at most (``send_once``), so however many of them reach Redis, in
        whatever order, it is queued once.
        """
        try:
            async with asyncio.timeout(self._client.claim_timeout_s):
                await self._claiming.acquire()
        except TimeoutError:
            msg = "too many runs with an Idempotency-Key are waiting for the broker; retry later"
            raise EnqueueError(msg) from None
        try:
            return await self._claim_and_send(request, wire)
        finally:
            self._claiming.release()

    async def _claim_and_send(self, request: RunRequest, wire: Sequence[_Wire]) -> Submission:
        async with self._database.engine.connect() as connection:
            transaction = await connection.begin()  # rolled back on close unless committed
            if await self._claim(connection, request):
                try:
                    async with asyncio.timeout(self._client.claim_timeout_s):
                        await self._client.send([request], wire)
                except (EnqueueUnconfirmedError, TimeoutError) as exc:
                    raise await self._keep_unconfirmed(
                        connection, transaction, request, exc
                    ) from exc
                await self._commit_claim(transaction, request)
                return Submission(request.run_id, "queued", replayed=False)
        # The key was taken by a run that was queued (committed) meanwhile.
        existing = await self._replays.existing_for(request)
        if existing is None:
            msg = f"run {request.run_id} could not be recorded: its key was taken and freed"
            raise EnqueueError(msg)
        return existing

    async def _keep_unconfirmed(
        self,
        connection: AsyncConnection,
        transaction: AsyncTransaction,
        request: RunRequest,
        cause: Exception,
    ) -> EnqueueUnconfirmedError:
        """Commit a claim whose send is unconfirmed, marked so; the error to raise."""
        reason = (
            f"no answer within {self._client.claim_timeout_s:g} s"
            if isinstance(cause, TimeoutError)
            else str(cause.__cause__ or cause)
        )
        key = request.idempotency_key
        try:
            marked_at = datetime.now(UTC)
            await unconfirmed_sends.mark_unconfirmed(connection, [request.run_id], at=marked_at)
            await transaction.commit()
        except Exception as exc:  # noqa: BLE001 - the run may be queued; only its key is lost
            _log.error(
                "idempotency-key-unrecorded",
                run_id=request.run_id,
                task=request.info.name,
                error=f"{type(exc).__name__}: {exc}",
            )
            msg = (
                f"the broker did not confirm run {request.run_id} ({reason}), and its "
                f"Idempotency-Key could not be recorded: it may have been queued, or not"
            )
            return EnqueueUnconfirmedError(msg, run_ids=[request.run_id], idempotency_key=key)
        _log.warning(
            "send-unconfirmed",
            run_id=request.run_id,
            task=request.info.name,
            error=reason,
            message="claim kept: a repeat of the key, or resend_unconfirmed_runs, sends it",
        )
        msg = (
            f"the broker did not confirm run {request.run_id} ({reason}): it is recorded "
            "as queued and will be queued once, by a repeat of this request with the same "
            "Idempotency-Key (which answers with this run) or by the service itself "
            "within a few minutes of the broker answering again"
        )
        return EnqueueUnconfirmedError(
            msg, run_ids=[request.run_id], recorded=True, idempotency_key=key
        )

    async def _claim(self, connection: AsyncConnection, request: RunRequest) -> bool:
        """Insert the claim; False if the key is taken. On PostgreSQL the wait for a key
        another request holds is bounded (``lock_timeout``)."""
        if connection.dialect.name == "postgresql":
            wait_ms = int((self._client.claim_timeout_s + _CLAIM_WAIT_MARGIN_S) * 1000)
            await connection.exec_driver_sql(f"SET LOCAL lock_timeout = {wait_ms}")
        try:
            return await runs.claim_idempotency_key(connection, request.queued_row())
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            msg = (
                f"another request with Idempotency-Key {request.idempotency_key!r} is still "
                "queueing its run; retry shortly"
            )
            raise EnqueueError(msg) from None

    @staticmethod
    async def _commit_claim(transaction: AsyncTransaction, request: RunRequest) -> None:
        """Commit a claim whose run is already sent. Should the commit fail, the run is
        still queued (its worker records it, without the key): that is logged, not
        raised, as an error would invite a resend and run it twice."""
        try:
            await transaction.commit()
        except Exception as exc:  # noqa: BLE001 - the run is queued; only its key is lost
            _log.error(
                "idempotency-key-unrecorded",
                run_id=request.run_id,
                task=request.info.name,
                error=f"{type(exc).__name__}: {exc}",
            )
