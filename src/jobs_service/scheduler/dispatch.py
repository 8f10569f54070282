"""Turning due schedules into runs, exactly once across any number of replicas.

Every tick (once a second, on the second) a replica:

1. re-sends the *outbox*: claims committed with their run but not yet sent (the replica
   that made them died, or the broker refused or answered ambiguously). It first leases
   them (one UPDATE), so each is sent again by one replica, with the same run id: a
   fire is neither lost nor claimed twice. Fires are sent with ``send_once``, so a
   re-send adds nothing when the first send did reach Redis (it timed out, or was not
   marked sent): a fire is not run twice either;
2. starts buffered fires (``buffer_one``) whose schedule has no active run any more;
3. in one transaction, reads the schedules that are due now (one indexed query, so a
   schedule created, paused or re-timed a moment ago is seen as it is now; a copy kept
   between ticks would let a fire due soon after an API change wait for the copy's next
   refresh), decides each one on its own (:mod:`~jobs_service.scheduler.decide`; one
   this host cannot read is reported and left out, the others go on), moves
   ``next_fire_at`` on where the row is still as read (a pause, edit or delete
   committed in between wins, and its schedule is left out of the rest of the tick),
   applies the overlap policy and claims the fire by inserting ``(schedule_id,
   fire_time)`` into ``schedule_fires`` together with the run's ``queued`` row. The
   unique key makes a fire that another replica (or an earlier life of this one)
   claimed a no-op; rows are touched in schedule-id order so concurrent replicas cannot
   deadlock;
4. sends the won runs in one pipelined round trip and marks their claims sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from jobs_service.client import EnqueueError, JobsClient, RunRequest
from jobs_service.core.errors import JobsError
from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.repositories import runs
from jobs_service.infrastructure.repositories import schedules as repo
from jobs_service.scheduler.decide import MAX_MISSED_COUNTED, Decision, decide
from jobs_service.scheduler.metrics import count_fire, count_misses, count_skip

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jobs_service.infrastructure.database import Database
    from jobs_service.infrastructure.models import Schedule

__all__ = ["FireDispatcher", "TickReport"]

#: TaskIQ's loop wakes on the wall-clock second, but it sleeps on the monotonic clock and
#: may wake a fraction of a millisecond early; a fire due that close counts as due.
_LOOKAHEAD = timedelta(milliseconds=50)
#: An unsent claim younger than this may still be on its way from the replica that made
#: (or last leased) it; older ones are re-sent.
_OUTBOX_DELAY = timedelta(seconds=2)
#: A schedule this host cannot read is reported (logged, counted) at most this often by
#: each replica: it stays due, and a report every second would bury the rest of the log.
_UNREADABLE_REPORT_EVERY = timedelta(minutes=1)
#: What reading a stored schedule's timing raises when the row cannot work on this host.
_UNREADABLE = (JobsError, ValueError, OverflowError)
_log = get_logger("jobs_service.scheduler")


@dataclass(slots=True)
class TickReport:
    """What one tick did (for tests, metrics and benchmarks)."""

    fired: list[tuple[int, datetime, str]] = field(default_factory=list)
    skipped: list[tuple[int, datetime, str]] = field(default_factory=list)
    missed: int = 0
    resent: int = 0


class FireDispatcher:
    """Fires due schedules; one per scheduler process."""

    def __init__(
        self,
        database: Database,
        client: JobsClient,
        *,
        replica: str,
        grace_s: float = 5.0,
    ) -> None:
        self._database = database
        self._client = client
        self._replica = replica
        self._grace_s = grace_s
        self._sent_at = datetime.now(UTC)  # when the last batch reached the broker
        self._unreadable_reported: dict[int, datetime] = {}  # schedule id -> last report

    async def tick(self, now: datetime | None = None) -> TickReport:
        """Fire whatever is due at ``now`` (default: the current time)."""
        now = now or datetime.now(UTC)
        report = TickReport()
        await self._resend_unsent(now, report)
        await self._release_buffered(now, report)
        await self._fire(now, now + _LOOKAHEAD, report)
        return report

    # -- deciding -----------------------------------------------------------------------

    def _decide_each(
        self, due: Sequence[Schedule], horizon: datetime, now: datetime, report: TickReport
    ) -> list[Decision]:
        """A decision per schedule; one this host cannot read is reported and left out,
        so it cannot stop the others from firing."""
        decisions = []
        for schedule in due:
            try:
                decisions.append(decide(schedule, horizon, self._grace_s))
            except _UNREADABLE as exc:
                self._report_unreadable(schedule, exc, now, report)
            else:
                self._unreadable_reported.pop(schedule.id, None)
        return decisions

    def _report_unreadable(
        self, schedule: Schedule, error: Exception, now: datetime, report: TickReport
    ) -> None:
        """Log and count a schedule whose timing cannot be read (an unknown zone, a bad
        cron), once a minute while it lasts; a paused one would not fire anyway."""
        last = self._unreadable_reported.get(schedule.id)
        if not schedule.enabled or (last is not None and now - last < _UNREADABLE_REPORT_EVERY):
            return
        self._unreadable_reported[schedule.id] = now
        due_at = schedule.next_fire_at or now
        report.skipped.append((schedule.id, due_at, "invalid_timing"))
        count_skip(schedule.name, "invalid_timing")
        _log.error(
            "schedule-invalid",
            schedule_id=schedule.id,
            schedule=schedule.name,
            task=schedule.task,
            reason="invalid_timing",
            error=str(error)[:300],
            due_at=due_at.isoformat(),
            message="not fired until its timing is fixed (PATCH it) or this host can read it",
        )

    @staticmethod
    def _advance(decision: Decision, now: datetime) -> repo.Advance:
        schedule = decision.schedule
        return repo.Advance(
            schedule_id=schedule.id,
            read_next_fire_at=schedule.next_fire_at,
            read_updated_at=schedule.updated_at,
            next_fire_at=decision.next_fire_at,
            last_fire_at=decision.fire_time if decision.wants_claim else schedule.last_fire_at,
            finished_at=now if decision.next_fire_at is None else None,
        )

    def _claims(
        self, decisions: list[Decision], active: dict[int, int], buffered: set[int]
    ) -> tuple[list[repo.FireClaim], dict[tuple[int, datetime], RunRequest]]:
        claims: list[repo.FireClaim] = []
        requests: dict[tuple[int, datetime], RunRequest] = {}
        for decision in decisions:
            schedule, fire_time = decision.schedule, decision.fire_time
            if fire_time is None or not decision.wants_claim:
                continue  # nothing due, or paused: its fires pass without a claim
            busy = active.get(schedule.id, 0) > 0
            if busy and schedule.overlap == "skip":
                claims.append(repo.FireClaim(schedule.id, fire_time, "skipped", "overlap", None))
                continue
            if busy and schedule.overlap == "buffer_one":
                waiting = schedule.id in buffered
                claims.append(
                    repo.FireClaim(
                        schedule.id,
                        fire_time,
                        "skipped" if waiting else "buffered",
                        "overlap" if waiting else None,
                        None,
                    )
                )
                continue
            request = self._prepare(schedule, fire_time)
            if request is None:
                claims.append(
                    repo.FireClaim(schedule.id, fire_time, "skipped", "invalid_task", None)
                )
                continue
            claims.append(repo.FireClaim(schedule.id, fire_time, "enqueued", None, request.run_id))
            requests[(schedule.id, fire_time)] = request
        return claims, requests

    def _prepare(self, schedule: Schedule, fire_time: datetime) -> RunRequest | None:
        """The run for a fire, or None (logged) if the task or its kwargs no longer fit
        the code, e.g. after a deploy renamed a parameter.

        A Teams channel the configuration no longer has (renamed, removed, or missing
        on this replica) does not stop the fire: the task runs, and only its delivery
        there fails, on the run's deliveries (the scheduler warns of such schedules at
        start-up)."""
        try:
            return self._client.prepare(
                schedule.task,
                schedule.kwargs,
                # The outbox may send it again: a send that did land is not added twice.
                send_once=True,
                source="schedule",
                schedule_id=schedule.id,
                scheduled_for=fire_time,
                deliver_to=schedule.deliver_to,
                check_channels=False,
            )
        except JobsError as exc:
            _log.error(
                "schedule-invalid",
                schedule_id=schedule.id,
                task=schedule.task,
                reason="invalid_task",
                error=str(exc),
            )
            return None

    # -- firing -------------------------------------------------------------------------

    async def _fire(self, now: datetime, horizon: datetime, report: TickReport) -> None:
        async with self._database.sessions.begin() as session:
            due = await repo.due_schedules(session, horizon)
            if not due:
                return
            connection = await session.connection()
            decisions = self._decide_each(due, horizon, now, report)
            claiming = [d for d in decisions if d.wants_claim]
            active = await repo.active_run_counts(
                connection, [d.schedule.id for d in claiming if d.schedule.overlap != "allow"]
            )
            buffered = (
                {fire.schedule_id for fire in await repo.buffered_fires(connection)}
                if any(d.schedule.overlap == "buffer_one" for d in claiming)
                else set()
            )
            # Reads done: from here the advanced rows stay locked until the commit.
            advances = [self._advance(decision, now) for decision in decisions]
            held = await repo.advance_schedules(connection, advances)
            decisions = [d for d in decisions if d.schedule.id in held]
            claims, requests = self._claims(
                [d for d in decisions if d.wants_claim], active, buffered
            )
            won = await repo.claim_fires(connection, claims, self._replica, now)
            sent = [requests[key] for key in sorted(won) if key in requests]
            await runs.insert_queued_runs(connection, [r.queued_row() for r in sent])
        if not await self._send(sent, now):
            requests = {}  # claimed, in the outbox: reported when re-sent
        self._report(decisions, claims=claims, won=won, requests=requests, report=report)

    async def _send(self, requests: list[RunRequest], now: datetime) -> bool:
        """Send and mark sent; on failure the claims stay in the outbox."""
        if not requests:
            return True
        try:
            await self._client.send(requests)
        except EnqueueError as exc:
            _log.error(
                "schedule-enqueue-failed",
                error=str(exc),
                fires=len(requests),
                message="claims kept; re-sent on a later tick",
            )
            return False
        self._sent_at = datetime.now(UTC)
        async with self._database.engine.begin() as connection:
            await repo.mark_sent(connection, [r.run_id for r in requests], self._sent_at)
        return True

    async def _resend_unsent(self, now: datetime, report: TickReport) -> None:
        async with self._database.engine.begin() as connection:
            unsent = await repo.lease_unsent_claims(connection, now - _OUTBOX_DELAY, now)
        if not unsent:
            return
        try:
            result = await self._client.resend([claim.run_id for claim in unsent])
        except EnqueueError as exc:
            _log.error(
                "schedule-enqueue-failed",
                error=str(exc),
                fires=len(unsent),
                message="claims kept; re-sent on a later tick",
            )
            return
        self._sent_at = datetime.now(UTC)
        async with self._database.engine.begin() as connection:
            await repo.mark_sent(connection, [*result.sent, *result.started], self._sent_at)
        if result.sent:
            report.resent += len(result.sent)
            _log.warning("schedule-resent", runs=len(result.sent), run_ids=result.sent[:20])

    async def _release_buffered(self, now: datetime, report: TickReport) -> None:
        """Start waiting fires, oldest first, once their schedule's run has ended; drop
        those whose schedule was paused or no longer buffers."""
        sent: list[RunRequest] = []
        started: list[str] = []  # schedule names of `sent`, counted once committed
        dropped: list[tuple[str, str]] = []  # (schedule name, reason), likewise
        async with self._database.sessions.begin() as session:
            connection = await session.connection()
            fires = await repo.buffered_fires(connection)
            if not fires:
                return
            schedules = {
                s.id: s
                for s in await repo.schedules_by_ids(session, [f.schedule_id for f in fires])
            }
            active = await repo.active_run_counts(connection, [fire.schedule_id for fire in fires])
            for fire in fires:
                schedule = schedules.get(fire.schedule_id)
                if schedule is None or not schedule.enabled or schedule.overlap != "buffer_one":
                    await repo.drop_buffered(connection, fire.schedule_id)
                    if schedule is not None:
                        dropped.append((schedule.name, "overlap" if schedule.enabled else "paused"))
                    continue
                if active.get(fire.schedule_id, 0):
                    continue
                request = self._prepare(schedule, fire.fire_time)
                if request is None:
                    await repo.drop_buffered(connection, fire.schedule_id)
                    dropped.append((schedule.name, "invalid_task"))
                    continue
                if await repo.take_buffered_fire(connection, fire.id, request.run_id, now):
                    sent.append(request)
                    started.append(schedule.name)
            await runs.insert_queued_runs(connection, [r.queued_row() for r in sent])
        for name, reason in dropped:
            count_skip(name, reason)
        # Taken and recorded: fired, even if the send fails (the outbox re-sends it).
        for name in started:
            count_fire(name)
        if await self._send(sent, now):
            for request in sent:
                fire_time = request.scheduled_for or now
                report.fired.append((request.schedule_id or 0, fire_time, request.run_id))
                _log.info(
                    "schedule-fired",
                    schedule_id=request.schedule_id,
                    task=request.info.name,
                    run_id=request.run_id,
                    buffered=True,
                    fire_time=fire_time.isoformat(),
                )

    # -- reporting ----------------------------------------------------------------------

    def _report(
        self,
        decisions: list[Decision],
        *,
        claims: list[repo.FireClaim],
        won: set[tuple[int, datetime]],
        requests: dict[tuple[int, datetime], RunRequest],
        report: TickReport,
    ) -> None:
        by_id = {d.schedule.id: d.schedule for d in decisions}
        for decision in decisions:
            schedule = decision.schedule
            if decision.missed and decision.missed_range:
                report.missed += decision.missed
                count_misses(schedule.name, decision.missed)
                first, last = decision.missed_range
                _log.warning(
                    "schedule-missed",
                    schedule_id=schedule.id,
                    schedule=schedule.name,
                    task=schedule.task,
                    missed=decision.missed,
                    more=decision.missed >= MAX_MISSED_COUNTED,
                    first=first.isoformat(),
                    last=last.isoformat(),
                    catchup_window_s=schedule.catchup_window_s,
                )
            if decision.fire_time is not None and not schedule.enabled:
                report.skipped.append((schedule.id, decision.fire_time, "paused"))
                count_skip(schedule.name, "paused")
                _log.info(
                    "schedule-skipped",
                    schedule_id=schedule.id,
                    schedule=schedule.name,
                    reason="paused",
                    fire_time=decision.fire_time.isoformat(),
                )
        for claim in claims:
            key = (claim.schedule_id, claim.fire_time)
            schedule = by_id[claim.schedule_id]
            fields = {
                "schedule_id": claim.schedule_id,
                "schedule": schedule.name,
                "task": schedule.task,
                "fire_time": claim.fire_time.isoformat(),
            }
            if key not in won:  # another replica's fire: its metrics count it
                report.skipped.append((*key, "already_claimed"))
                _log.debug("schedule-skipped", reason="already_claimed", **fields)
            elif claim.outcome == "enqueued" and not requests:
                # Claimed with its run: the outbox re-sends that run, so it is a fire.
                report.skipped.append((*key, "send_failed"))
                count_fire(schedule.name)
            elif claim.outcome == "enqueued" and key in requests:
                lateness = round((self._sent_at - claim.fire_time).total_seconds() * 1000, 1)
                report.fired.append((*key, requests[key].run_id))
                count_fire(schedule.name)
                _log.info(
                    "schedule-fired", run_id=requests[key].run_id, lateness_ms=lateness, **fields
                )
            else:
                reason = claim.reason or claim.outcome
                report.skipped.append((*key, reason))
                if claim.outcome != "buffered":  # counted when its run starts (or dropped)
                    count_skip(schedule.name, reason)
                _log.info("schedule-skipped", reason=reason, **fields)
