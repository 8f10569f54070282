"""The service's own run history as an agent (for maintenance jobs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from jobs_service.infrastructure.repositories import audit, runs, schedules, webhooks

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from jobs_service.infrastructure.database import Database
    from jobs_service.infrastructure.models import JobRun

__all__ = ["EVENTS_KEPT_AT_LEAST", "FIRE_CLAIMS_KEPT", "DatabaseRunHistory"]

#: How long a schedule's fire claims are kept: longer than the longest catch-up window.
FIRE_CLAIMS_KEPT = timedelta(days=8)

#: A webhook event is what recognises a sender's retry as a duplicate, so it is kept
#: longer than senders retry (Stripe: 3 days; Standard Webhooks senders: about a day),
#: whatever the runs' retention.
EVENTS_KEPT_AT_LEAST = timedelta(days=8)


class _BatchDelete(Protocol):
    async def __call__(
        self, session: AsyncSession, cutoff: datetime, *, batch_size: int
    ) -> int: ...


class DatabaseRunHistory:
    """:class:`~jobs_service.core.ports.RunHistory` over ``job_runs``."""

    def __init__(self, database: Database, *, delete_batch_size: int = 1000) -> None:
        self._database = database
        self._batch = delete_batch_size

    async def delete_finished_before(self, cutoff: datetime) -> int:
        """Delete in batches of ``delete_batch_size``, one transaction each."""
        total = await self._delete_in_batches(runs.delete_finished_before, cutoff)
        # Fire claims must outlive the longest catch-up window (7 days) so a restarted
        # scheduler cannot fire a time twice, whatever the runs' retention (as short as
        # a day); beyond that they are just volume.
        claims_cutoff = datetime.now(UTC) - FIRE_CLAIMS_KEPT
        await self._delete_in_batches(schedules.delete_fires_before, claims_cutoff)
        return total

    async def delete_finished_events_before(self, cutoff: datetime) -> int:
        """Delete processed and failed webhook events last changed before ``cutoff``, or
        before :data:`EVENTS_KEPT_AT_LEAST` ago if that is earlier; one transaction per
        batch of ``delete_batch_size``."""
        cutoff = min(cutoff, datetime.now(UTC) - EVENTS_KEPT_AT_LEAST)
        return await self._delete_in_batches(webhooks.delete_settled_before, cutoff)

    async def delete_audit_entries_before(self, cutoff: datetime) -> int:
        """Delete audit entries recorded before ``cutoff``; one transaction per batch
        of ``delete_batch_size``, so gateways writing entries meanwhile never wait long."""
        return await self._delete_in_batches(audit.delete_entries_before, cutoff)

    async def _delete_in_batches(self, delete_batch: _BatchDelete, cutoff: datetime) -> int:
        """Run ``delete_batch`` in transactions of its own until a batch comes back
        short: small transactions keep locks and WAL small on big tables."""
        total = 0
        while True:
            async with self._database.sessions.begin() as session:
                deleted = await delete_batch(session, cutoff, batch_size=self._batch)
            total += deleted
            if deleted < self._batch:
                return total

    async def get_run(self, run_id: str) -> JobRun | None:
        """One run as recorded (status, summary, content, deliver_to)."""
        async with self._database.sessions() as session:
            return await runs.get_run(session, run_id=run_id)

    async def count_stuck(self, older_than: datetime) -> int:
        """Runs queued or running since before ``older_than``."""
        async with self._database.sessions() as session:
            return await runs.count_stuck_runs(session, older_than)
