"""The relay: the runs of webhook events stored but never confirmed sent, sent again.

An event is ``accepted`` with its ``queued`` run in one transaction, and the run is sent
after the commit. When that send fails (the broker is down) the event stays
``accepted``; the relay, which every gateway runs every ``webhooks.relay_after_s`` (and
the ``relay_webhook_events`` job every 10 minutes), sends the same run once the broker
answers. The same run id, so an event is never processed by two different runs.

It leaves alone what this process is still sending or has sent without having marked it
yet (:mod:`~jobs_service.webhooks.run_sends`, :mod:`~jobs_service.webhooks.enqueued_marks`).
A run that can never be sent — its row deleted, its task no longer registered — ends its
event ``failed`` with the reason: left ``accepted`` it came back to every pass, and a
page of them (500) hid every later event from the relay for good. A task this process
does not know may be one a newer release added (a rolling deploy: the relay runs in
every gateway and worker), so such a run is left for :data:`UNKNOWN_TASK_GRACE`, to a
process that knows it, before its event is failed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from jobs_service.client import EnqueueError
from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.repositories import runs
from jobs_service.infrastructure.repositories import webhooks as repo
from jobs_service.tasks.registry import UnknownTaskError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from jobs_service.client import JobsClient
    from jobs_service.core.errors import JobsError
    from jobs_service.infrastructure.database import Database
    from jobs_service.webhooks.enqueued_marks import EnqueuedMarks
    from jobs_service.webhooks.run_sends import RunSends

__all__ = ["UNKNOWN_TASK_GRACE", "Relay"]

_log = get_logger("jobs_service.webhooks")
#: How long an accepted event whose task this process does not know waits for one that
#: does (longer than a rolling deploy) before it is failed.
UNKNOWN_TASK_GRACE = timedelta(hours=1)


class Relay:
    """Sends the runs of events ``accepted`` for longer than ``after_s``."""

    def __init__(
        self,
        database: Database,
        client: JobsClient,
        *,
        marks: EnqueuedMarks,
        sends: RunSends,
        after_s: float,
    ) -> None:
        self._database = database
        self._client = client
        self._marks = marks
        self._sends = sends
        self._after = timedelta(seconds=after_s)

    async def run(self) -> int:
        """One pass; returns how many runs it sent."""
        stale = await self._stale()
        if not stale:
            return 0
        try:
            result = await self._client.resend([event.run_id for event in stale])
        except EnqueueError as exc:
            _log.warning("webhook-relay-failed", events=len(stale), error=str(exc))
            return 0
        done = set(result.sent) | set(result.started)
        async with self._database.engine.begin() as connection:
            await repo.mark_enqueued(
                connection, [(e.id, e.run_id) for e in stale if e.run_id in done], datetime.now(UTC)
            )
        unsendable = self._past_grace(stale, result.unsendable)
        if unsendable:
            await self._fail_unsendable(stale, unsendable)
        if result.sent:
            _log.info("webhook-relayed", events=len(result.sent))
        return len(result.sent)

    async def _stale(self) -> list[repo.StaleEvent]:
        """Events accepted for a while, but not those whose runs this process sent (or
        is sending), however old they look: still being committed or sent (in flight),
        or sent and not yet marked."""
        async with self._marks.settled() as unmarked:
            cutoff = datetime.now(UTC) - self._after
            async with self._database.engine.begin() as connection:
                stale = await repo.stale_accepted(connection, cutoff)
            return [
                event
                for event in stale
                if event.run_id not in self._sends.in_flight and event.id not in unmarked
            ]

    @staticmethod
    def _past_grace(
        stale: list[repo.StaleEvent], unsendable: Mapping[str, JobsError]
    ) -> dict[str, JobsError]:
        """The unsendable runs to fail now: all but those whose task is unknown here
        and whose event was accepted within :data:`UNKNOWN_TASK_GRACE` (logged)."""
        accepted = {event.run_id: event.accepted_at for event in stale}
        oldest_kept = datetime.now(UTC) - UNKNOWN_TASK_GRACE
        waiting = {
            run_id
            for run_id, exc in unsendable.items()
            if isinstance(exc, UnknownTaskError) and accepted[run_id] > oldest_kept
        }
        if waiting:
            _log.warning(
                "webhook-relay-task-unknown",
                events=len(waiting),
                run_ids=sorted(waiting)[:20],
                message="left for a process that knows the task; failed after "
                f"{UNKNOWN_TASK_GRACE.total_seconds() / 3600:g} h",
            )
        return {run_id: exc for run_id, exc in unsendable.items() if run_id not in waiting}

    async def _fail_unsendable(
        self, stale: list[repo.StaleEvent], unsendable: Mapping[str, JobsError]
    ) -> None:
        """The events whose run can never be sent, and those runs, end ``failed`` with
        the reason; an operator replays the events once it is fixed."""
        now = datetime.now(UTC)
        errors = {
            run_id: {"type": type(exc).__name__, "message": str(exc)}
            for run_id, exc in unsendable.items()
        }
        async with self._database.engine.begin() as connection:
            for run_id, error in errors.items():
                await runs.fail_unsendable(connection, [run_id], error=error, at=now)
            await repo.mark_finished(
                connection,
                [(e.id, "failed", e.run_id, errors[e.run_id]) for e in stale if e.run_id in errors],
                now,
            )
        _log.error(
            "webhook-relay-unsendable",
            events=len(errors),
            run_ids=list(errors)[:20],
            errors=sorted({error["message"] for error in errors.values()})[:5],
            message="events failed: their runs can never be sent; replay them once fixed",
        )
