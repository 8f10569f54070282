"""Sending recorded runs again: an outbox's runs whose send may not have happened, and
runs whose send the broker never confirmed. Each is added once at most per queueing, so
sending one again never queues it twice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select

from jobs_service.client._errors import RunNotFoundError
from jobs_service.client._requests import RunRequest
from jobs_service.core.errors import JobsError
from jobs_service.core.logging import get_logger
from jobs_service.core.ports import Resends
from jobs_service.infrastructure.models import JobRun
from jobs_service.infrastructure.repositories import unconfirmed_sends

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from jobs_service.client._client import JobsClient
    from jobs_service.infrastructure.database import Database

__all__ = ["Resender", "Resent"]

_log = get_logger("jobs_service.client")


@dataclass(frozen=True, slots=True)
class Resent:
    """What :meth:`JobsClient.resend` did: the runs sent, those a worker had started, and
    those that cannot be sent, with why (their row is gone, or their task)."""

    sent: list[str]
    started: list[str]
    unsendable: dict[str, JobsError] = field(default_factory=dict)


class Resender:
    """Sends ``client``'s recorded runs again, as ``database`` has them."""

    def __init__(self, client: JobsClient, database: Database) -> None:
        self._client = client
        self._database = database

    async def resend(self, run_ids: Sequence[str]) -> Resent:
        async with self._database.sessions() as session:
            rows = (
                (await session.execute(select(JobRun).where(JobRun.run_id.in_(run_ids))))
                .scalars()
                .all()
            )
        pending: list[RunRequest] = []
        started: list[str] = []
        found = {run.run_id for run in rows}
        unsendable: dict[str, JobsError] = {
            run_id: RunNotFoundError(run_id) for run_id in run_ids if run_id not in found
        }
        for run in rows:
            if run.status != "queued":
                started.append(run.run_id)
                continue
            try:
                info = self._client.task(run.task)
            except JobsError as exc:
                unsendable[run.run_id] = exc
                continue
            pending.append(
                RunRequest(
                    info=info,
                    kwargs=run.kwargs,
                    source=run.source,
                    run_id=run.run_id,
                    queued_at=run.queued_at,
                    schedule_id=run.schedule_id,
                    scheduled_for=run.scheduled_for,
                    webhook_event_id=run.webhook_event_id,
                    deliver_to=run.deliver_to,
                    # Queued again by an operator's retry: the attempt after the last.
                    attempt=run.attempt + 1 if run.attempt else None,
                    send_once=True,
                )
            )
        if pending:
            await self._client.send(pending)
        settled = {r.run_id for r in pending} | set(started)
        await self._unmark(
            [r.run_id for r in rows if r.send_unconfirmed_at and r.run_id in settled]
        )
        return Resent(sent=[r.run_id for r in pending], started=started, unsendable=unsendable)

    async def _unmark(self, run_ids: Sequence[str]) -> None:
        """Unmark runs whose send is now confirmed (or that a worker started). A failure
        is logged: the mark stays, and the next re-send of them adds nothing."""
        if not run_ids:
            return
        try:
            async with self._database.engine.begin() as connection:
                await unconfirmed_sends.clear_unconfirmed(connection, run_ids)
        except Exception as exc:  # noqa: BLE001 - they are queued; only the mark is stale
            _log.warning(
                "send-unconfirmed-mark-kept", run_ids=list(run_ids)[:20], error=str(exc)[:300]
            )

    async def resend_unconfirmed(self, before: datetime, *, limit: int) -> Resends:
        async with self._database.engine.connect() as connection:
            run_ids = await unconfirmed_sends.unconfirmed_since(connection, before, limit=limit)
        if not run_ids:
            return Resends(checked=0, sent=0, started=0, unsendable=0)
        result = await self._client.resend(run_ids)
        if result.sent:
            _log.warning("runs-resent-unconfirmed", runs=len(result.sent), run_ids=result.sent[:20])
        if result.unsendable:
            _log.error(
                "runs-unconfirmed-unsendable",
                runs=len(result.unsendable),
                run_ids=sorted(result.unsendable)[:20],
                errors=sorted({str(exc) for exc in result.unsendable.values()})[:5],
            )
        return Resends(
            checked=len(run_ids),
            sent=len(result.sent),
            started=len(result.started),
            unsendable=len(result.unsendable),
        )
