"""Accepting webhook events durably: nothing answered 202 is ever lost.

For each new event one transaction stores the event (``accepted``, with the run id it
will be processed by) and that run's ``queued`` row; only then is the run sent. If the
broker is down the sender still gets 202 — the event is safe in the database — and the
relay sends the same run once the broker answers. A repeat of an event already stored
is a duplicate: same event id, no second run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from jobs_service.client import EnqueueError, RunRequest
from jobs_service.core.errors import JobsError, PermanentError
from jobs_service.core.ids import new_run_id
from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.repositories import runs
from jobs_service.infrastructure.repositories import webhooks as repo

if TYPE_CHECKING:
    from jobs_service.client import JobsClient
    from jobs_service.core.settings import WebhookSource
    from jobs_service.infrastructure.database import Database
    from jobs_service.infrastructure.models import WebhookEvent
    from jobs_service.webhooks.events import IncomingEvent

__all__ = ["Accepted", "UnknownEventError", "WebhookInbox"]

_log = get_logger("jobs_service.webhooks")


class UnknownEventError(PermanentError):
    """No webhook event with that id."""

    def __init__(self, event_id: int) -> None:
        super().__init__(f"no webhook event {event_id}")


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer for one event."""

    event_id: int
    external_id: str
    status: str  # "accepted" or "duplicate"


class WebhookInbox:
    """Stores, enqueues and relays webhook events."""

    def __init__(self, database: Database, client: JobsClient, *, relay_after_s: float) -> None:
        self._database = database
        self._client = client
        self._relay_after = timedelta(seconds=relay_after_s)

    async def accept(
        self,
        source_name: str,
        source: WebhookSource,
        events: list[IncomingEvent],
        headers: dict[str, str],
    ) -> list[Accepted]:
        """Store new events with their runs, send the runs, report each event."""
        now = datetime.now(UTC)
        new = [
            repo.NewEvent(
                source=source_name,
                external_id=event.external_id,
                event_type=event.event_type,
                headers=headers,
                body=event.body,
                task=source.route_for(event.event_type).task,
                run_id=new_run_id(),
                received_at=now,
            )
            for event in events
        ]
        requests: list[RunRequest] = []
        async with self._database.engine.begin() as connection:
            stored = await repo.insert_events(connection, new)
            duplicates = await repo.existing_ids(
                connection, source_name, [e.external_id for e in new if e.external_id not in stored]
            )
            unroutable = []
            for event in new:
                if event.external_id not in stored:
                    continue
                event_id = stored[event.external_id]
                route = source.route_for(event.event_type)
                try:
                    request = self._client.prepare(
                        event.task,
                        {"event_id": event_id},
                        source="webhook",
                        webhook_event_id=event_id,
                        deliver_to=route.deliver_to.as_json() if route.deliver_to else None,
                    )
                except JobsError as exc:
                    unroutable.append(
                        (
                            event_id,
                            "failed",
                            event.run_id,
                            {"type": type(exc).__name__, "message": str(exc)},
                        )
                    )
                    continue
                request.run_id = event.run_id
                request.queued_at = now
                requests.append(request)
            await runs.insert_queued_runs(connection, [r.queued_row() for r in requests])
            await repo.mark_finished(connection, unroutable, now)
        await self._send(requests)
        answers = [
            Accepted(stored[e.external_id], e.external_id, "accepted")
            for e in new
            if e.external_id in stored
        ]
        answers += [
            Accepted(event_id, external_id, "duplicate")
            for external_id, event_id in duplicates.items()
        ]
        return answers

    async def _send(self, requests: list[RunRequest]) -> bool:
        if not requests:
            return True
        try:
            await self._client.send(requests)
        except EnqueueError as exc:
            _log.warning(
                "webhook-enqueue-deferred",
                events=len(requests),
                error=str(exc),
                message="events are stored; the relay will enqueue them",
            )
            return False
        async with self._database.engine.begin() as connection:
            await repo.mark_enqueued(
                connection, [r.webhook_event_id or 0 for r in requests], datetime.now(UTC)
            )
        return True

    async def load(self, event_id: int) -> WebhookEvent:
        """One stored event; :class:`UnknownEventError` if it was deleted."""
        async with self._database.sessions() as session:
            event = await repo.get_event(session, event_id)
        if event is None:
            raise UnknownEventError(event_id)
        return event

    async def replay(self, event_id: int) -> str:
        """Process a stored event again with a new run of its route's task; the event
        keeps its history (earlier runs stay in ``job_runs``). Returns the run id."""
        event = await self.load(event_id)
        request = self._client.prepare(
            event.task, {"event_id": event.id}, source="webhook", webhook_event_id=event.id
        )
        async with self._database.engine.begin() as connection:
            await runs.insert_queued_runs(connection, [request.queued_row()])
            await repo.point_to_run(connection, event.id, request.run_id, datetime.now(UTC))
        await self._send([request])
        _log.info("webhook-replayed", event_id=event.id, run_id=request.run_id)
        return request.run_id

    async def relay(self) -> int:
        """Send the runs of events accepted but not enqueued for a while; returns how many."""
        cutoff = datetime.now(UTC) - self._relay_after
        async with self._database.engine.begin() as connection:
            stale = await repo.stale_accepted(connection, cutoff)
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
                connection, [e.id for e in stale if e.run_id in done], datetime.now(UTC)
            )
        if result.sent:
            _log.info("webhook-relayed", events=len(result.sent))
        return len(result.sent)
