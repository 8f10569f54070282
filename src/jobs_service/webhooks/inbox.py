"""Accepting webhook events durably: nothing answered 202 is ever lost.

Each new event is stored (``accepted``, with the run id it will be processed by) in the
same transaction as that run's ``queued`` row; only then is the run sent. If the broker
is down the sender still gets 202 — the event is safe in the database — and the relay
(:mod:`~jobs_service.webhooks.relay`) sends the same run once the broker answers. A
repeat of an event already stored is a duplicate: same event id, no second run.

Requests arriving together are written together (a
:class:`~jobs_service.infrastructure.group_commit.GroupCommit`): one transaction stores
the events of every waiting request and their runs, one pipelined send enqueues the
runs, then each request gets its own answers. A request waits for that send for
``webhooks.send_timeout_s`` at most (:mod:`~jobs_service.webhooks.run_sends`). Marking
the events ``enqueued`` happens afterwards, in the background
(:mod:`~jobs_service.webhooks.enqueued_marks`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DataError, DBAPIError

from jobs_service.core.errors import JobsError, PermanentError
from jobs_service.core.ids import new_run_id
from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.group_commit import Failed, GroupCommit
from jobs_service.infrastructure.repositories import runs
from jobs_service.infrastructure.repositories import webhooks as repo
from jobs_service.webhooks.enqueued_marks import EnqueuedMarks
from jobs_service.webhooks.event_ids import EventIdPool
from jobs_service.webhooks.relay import Relay
from jobs_service.webhooks.run_sends import RunSends

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from jobs_service.client import JobsClient, RunRequest
    from jobs_service.core.settings import WebhookSource
    from jobs_service.infrastructure.database import Database
    from jobs_service.infrastructure.held_connection import HeldConnection
    from jobs_service.infrastructure.models import WebhookEvent
    from jobs_service.webhooks.events import IncomingEvent

__all__ = ["Accepted", "EventInProgressError", "UnknownEventError", "WebhookInbox"]

_log = get_logger("jobs_service.webhooks")
#: Rounds of insert-then-look-up for events reported neither new nor found (an event
#: deleted between the two, by retention, is inserted again in the next round).
_ROUNDS = 3
_ROUTES_REMEMBERED = 1000
#: How long a webhook request waits for its runs to reach the broker, unless configured.
DEFAULT_SEND_TIMEOUT_S = 1.0


class UnknownEventError(PermanentError):
    """No webhook event with that id."""

    def __init__(self, event_id: int) -> None:
        super().__init__(f"no webhook event {event_id}")


class EventInProgressError(PermanentError):
    """The event's run has not ended: a replay now would leave that run behind (never
    relayed, or its outcome never recorded), so it is refused."""

    def __init__(self, event_id: int, status: str, run_id: str | None) -> None:
        where = (
            "has not reached the broker yet (the relay sends it once the broker answers)"
            if status == "accepted"
            else "is queued or running"
        )
        super().__init__(
            f"webhook event {event_id} is {status}: its run {run_id} {where}; replay the "
            "event once it is processed or failed, or cancel that run first"
        )
        self.event_id = event_id
        self.status = status
        self.run_id = run_id


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer for one event."""

    event_id: int
    external_id: str
    status: str  # "accepted" or "duplicate"


@dataclass(frozen=True, slots=True)
class _Incoming:
    """One event of a request, with the run it gets if it is new."""

    event: repo.NewEvent
    deliver_to: dict[str, Any] | None


class WebhookInbox:
    """Stores, enqueues and relays webhook events."""

    def __init__(
        self,
        database: Database,
        client: JobsClient,
        *,
        relay_after_s: float,
        sources: Mapping[str, WebhookSource] | None = None,
        max_batch: int = 500,
        writers: int = 2,
        send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
    ) -> None:
        self._database = database
        self._client = client
        #: The configured sources, for a replay's delivery targets (the route's now).
        self._sources = dict(sources or {})
        self._batches: GroupCommit[list[_Incoming], list[Accepted]] = GroupCommit(
            self._write, max_batch=max_batch, writers=writers
        )
        self._marks = EnqueuedMarks(database)
        self._sends = RunSends(database, client, self._marks, timeout_s=send_timeout_s)
        self._relay = Relay(
            database, client, marks=self._marks, sends=self._sends, after_s=relay_after_s
        )
        # PostgreSQL writes a batch in one statement, its own transaction (see
        # _commit_at_once); SQLite in a transaction of several.
        self._at_once = database.dialect == "postgresql"
        self._ids = EventIdPool()
        # One kept connection per concurrent batch (see GroupCommit's writers).
        self._connections = [database.hold(autocommit=self._at_once) for _ in range(writers)]
        self._routes: dict[tuple[str, str | None], tuple[str, dict[str, Any] | None]] = {}

    async def accept(
        self,
        source_name: str,
        source: WebhookSource,
        events: list[IncomingEvent],
        headers: dict[str, str],
    ) -> list[Accepted]:
        """Store new events with their runs, send the runs, report each event (in order).

        Raises whatever stopped the transaction (the database is down): then nothing of
        this request was stored, or a retry finds it a duplicate."""
        now = datetime.now(UTC)
        incoming = []
        for event in events:
            task, deliver_to = self._route(source_name, source, event.event_type)
            incoming.append(
                _Incoming(
                    repo.NewEvent(
                        source=source_name,
                        external_id=event.external_id,
                        event_type=event.event_type,
                        headers=headers,
                        body=event.body,
                        task=task,
                        run_id=new_run_id(),
                        received_at=now,
                    ),
                    deliver_to,
                )
            )
        return await self._batches.submit(incoming)

    def _route(
        self, source_name: str, source: WebhookSource, event_type: str | None
    ) -> tuple[str, dict[str, Any] | None]:
        """The task and delivery targets of an event type (remembered: settings do not
        change while the process runs, and resolving builds a model each time)."""
        key = (source_name, event_type)
        found = self._routes.get(key)
        if found is None:
            route = source.route_for(event_type)
            found = (route.task, route.deliver_to.as_json() if route.deliver_to else None)
            if len(self._routes) < _ROUTES_REMEMBERED:  # event types come from senders
                self._routes[key] = found
        return found[0], copy.deepcopy(found[1]) if found[1] is not None else None

    async def _write(self, deliveries: Sequence[list[_Incoming]]) -> list[list[Accepted] | Failed]:
        """One batch of deliveries (requests), written together; if the database refuses
        the batch's data, each delivery is written on its own, so that one bad event
        fails its own request only, not every request that arrived with it."""
        try:
            return list(await self._write_together(deliveries))
        except DataError as exc:
            if len(deliveries) == 1:
                raise
            _log.warning(
                "webhook-batch-refused",
                deliveries=len(deliveries),
                error=str(exc.orig or exc)[:300],
                message="writing its deliveries one by one",
            )
        return [await self._write_alone(delivery) for delivery in deliveries]

    async def _write_alone(self, delivery: list[_Incoming]) -> list[Accepted] | Failed:
        try:
            [answers] = await self._write_together([delivery])
        except DataError as exc:
            return Failed(exc)
        return answers

    async def _write_together(self, deliveries: Sequence[list[_Incoming]]) -> list[list[Accepted]]:
        """One batch: one transaction for every event and run, one send for the runs."""
        incoming = [item for delivery in deliveries for item in delivery]
        # From before the commit until their send is over, the relay (in this process)
        # leaves these runs alone however stale they look: it would send them a second
        # time while this batch is still sending them.
        held = self._sends.hold(item.event.run_id for item in incoming)
        try:
            stored, existing, requests = await self._commit_batch(incoming)
        except BaseException:
            self._sends.release(held)
            raise
        await self._sends.send_committed(requests, held)
        return [
            [
                Accepted(stored[e.run_id], e.external_id, "accepted")
                if e.run_id in stored
                else Accepted(existing[e.source, e.external_id], e.external_id, "duplicate")
                for e in (item.event for item in delivery)
            ]
            for delivery in deliveries
        ]

    async def _commit_batch(
        self, incoming: list[_Incoming]
    ) -> tuple[dict[str, int], dict[tuple[str, str], int], list[RunRequest]]:
        """:meth:`_commit` on a kept connection of this inbox's."""
        connection = self._connections.pop()
        try:
            try:
                return await self._commit(connection, incoming)
            except DBAPIError as exc:
                # The kept connection died while idle (a database restart): what
                # pre-ping would have caught. Once, on a new connection; if the first
                # COMMIT did land, the retry finds the events stored and the relay
                # sends their runs.
                if not (exc.connection_invalidated and connection.reused):
                    raise
                return await self._commit(connection, incoming)
        finally:
            self._connections.append(connection)

    async def _commit(
        self, held: HeldConnection, incoming: list[_Incoming]
    ) -> tuple[dict[str, int], dict[tuple[str, str], int], list[RunRequest]]:
        """Store the events and the runs of the new ones; ``run_id → id`` of the events
        stored, ``(source, external_id) → id`` of the duplicates, and the runs to send."""
        if self._at_once:
            return await self._commit_at_once(held, incoming)
        now = datetime.now(UTC)
        async with held.begin() as connection:

            async def insert(events: Sequence[repo.NewEvent]) -> dict[str, int]:
                return await repo.insert_events(connection, events)

            async def lookup(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
                return await repo.existing_ids(connection, keys)

            stored, existing = await _store([item.event for item in incoming], insert, lookup)
            requests, unroutable = self._prepare(incoming, stored, now)
            await runs.insert_queued_runs(connection, [r.queued_row() for r in requests])
            await repo.mark_finished(connection, unroutable, now)
        return stored, existing, requests

    async def _commit_at_once(
        self, held: HeldConnection, incoming: list[_Incoming]
    ) -> tuple[dict[str, int], dict[tuple[str, str], int], list[RunRequest]]:
        """PostgreSQL: with the events' ids taken beforehand (:class:`EventIdPool`),
        every run is prepared first and one statement stores the batch, events and
        runs, as its own transaction: one round trip instead of four, sent on the
        driver's connection (``HeldConnection.fetch``). Only duplicates cost more (a
        lookup of their ids)."""
        now = datetime.now(UTC)
        ids = await self._ids.take(held, len(incoming))
        assigned = {item.event.run_id: id_ for item, id_ in zip(incoming, ids, strict=True)}
        requests, unroutable = self._prepare(incoming, assigned, now)
        failed = {run_id: error or {} for _, _, run_id, error in unroutable}
        rows = {request.run_id: request.queued_row() for request in requests}

        async def insert(events: Sequence[repo.NewEvent]) -> dict[str, int]:
            queued = [rows[e.run_id] for e in events if e.run_id in rows]
            return await repo.store_events_with_runs(held, events, assigned, failed, queued)

        async def lookup(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
            async with held.begin() as connection:
                return await repo.existing_ids(connection, keys)

        stored, existing = await _store([item.event for item in incoming], insert, lookup)
        return stored, existing, [r for r in requests if r.run_id in stored]

    def _prepare(
        self, incoming: list[_Incoming], stored: dict[str, int], now: datetime
    ) -> tuple[list[RunRequest], list[repo.WebhookOutcome]]:
        """The runs of the new events, and the events whose run cannot be built."""
        requests: list[RunRequest] = []
        unroutable: list[repo.WebhookOutcome] = []
        for item in incoming:
            event = item.event
            event_id = stored.get(event.run_id)
            if event_id is None:
                continue
            try:
                request = self._client.prepare(
                    event.task,
                    {"event_id": event_id},
                    source="webhook",
                    webhook_event_id=event_id,
                    deliver_to=item.deliver_to,
                )
            except JobsError as exc:
                error = {"type": type(exc).__name__, "message": str(exc)}
                unroutable.append((event_id, "failed", event.run_id, error))
                continue
            request.run_id = event.run_id
            request.queued_at = now
            requests.append(request)
        return requests, unroutable

    async def aclose(self) -> None:
        """Let sends under way finish, write the pending ``enqueued`` marks and give the
        kept connections back (the runtime calls this as it stops, after the last
        request)."""
        await self._sends.aclose()
        await self._marks.aclose()
        for connection in self._connections:
            await connection.aclose()

    async def load(self, event_id: int) -> WebhookEvent:
        """One stored event; :class:`UnknownEventError` if it was deleted."""
        async with self._database.sessions() as session:
            event = await repo.get_event(session, event_id)
        if event is None:
            raise UnknownEventError(event_id)
        return event

    async def replay(self, event_id: int) -> str:
        """Process a stored event again with a new run of its route's task; the event
        keeps its history (earlier runs stay in ``job_runs``). Returns the run id.

        Only a ``processed`` or ``failed`` event is replayed; one whose run has not ended
        raises :class:`EventInProgressError`. The new run delivers its result where the
        event's route says now (a replay often follows a fixed address or a renamed
        channel), or, when the source or the route to that task is gone, where the
        event's last run did.
        """
        event = await self.load(event_id)
        if event.status not in repo.SETTLED_STATUSES:
            raise EventInProgressError(event.id, event.status, event.run_id)
        request = self._client.prepare(
            event.task,
            {"event_id": event.id},
            source="webhook",
            webhook_event_id=event.id,
            deliver_to=await self._replay_delivery(event),
        )
        async with self._database.engine.begin() as connection:
            pointed = await repo.point_to_run(
                connection, event.id, request.run_id, datetime.now(UTC)
            )
            if pointed:
                await runs.insert_queued_runs(connection, [request.queued_row()])
        if not pointed:  # replayed (or retried) by someone else since it was read
            latest = await self.load(event_id)
            raise EventInProgressError(latest.id, latest.status, latest.run_id)
        await self._sends.send([request])
        _log.info("webhook-replayed", event_id=event.id, run_id=request.run_id)
        return request.run_id

    async def _replay_delivery(self, event: WebhookEvent) -> dict[str, Any] | None:
        source = self._sources.get(event.source)
        if source is not None:
            task, deliver_to = self._route(event.source, source, event.event_type)
            if task == event.task:
                return deliver_to
        return await self._delivery_of(event.run_id)

    async def _delivery_of(self, run_id: str | None) -> dict[str, Any] | None:
        """Where the run ``run_id`` delivers its result: its ``deliver_to``, or the
        argument of that name for a task that delivers its own result."""
        if run_id is None:
            return None
        async with self._database.sessions() as session:
            run = await runs.get_run(session, run_id=run_id)
        if run is None:  # pruned by retention: the replay runs without delivery
            return None
        found = run.deliver_to or (run.kwargs or {}).get("deliver_to")
        return dict(found) if isinstance(found, dict) else None

    async def relay(self) -> int:
        """Send the runs of events accepted but not enqueued for a while; returns how
        many (see :mod:`~jobs_service.webhooks.relay`)."""
        return await self._relay.run()


async def _store(
    events: list[repo.NewEvent],
    insert: Callable[[Sequence[repo.NewEvent]], Awaitable[dict[str, int]]],
    lookup: Callable[[Sequence[tuple[str, str]]], Awaitable[dict[tuple[str, str], int]]],
) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Insert the new events with ``insert``; ``run_id → id`` of those, ``(source,
    external_id) → id`` of the duplicates (stored before, or earlier in the same batch),
    found with ``lookup``."""
    stored: dict[str, int] = {}
    existing: dict[tuple[str, str], int] = {}
    pending = events
    for _ in range(_ROUNDS):
        stored |= await insert(pending)
        missing = [e for e in pending if e.run_id not in stored]
        if not missing:
            return stored, existing
        existing |= await lookup([(e.source, e.external_id) for e in missing])
        pending = [e for e in missing if (e.source, e.external_id) not in existing]
        if not pending:
            return stored, existing
    msg = f"{len(pending)} webhook events were neither stored nor found; retry"
    raise RuntimeError(msg)
