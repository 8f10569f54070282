"""Turning due schedules into runs, exactly once across any number of replicas.

Every tick (once a second, on the second) a replica:

1. re-reads the schedules if its copy is older than ``refresh_s`` (API changes reach
   every replica within about a second, without a restart);
2. for each schedule whose ``next_fire_at`` has passed, enumerates the due fire times
   and splits them by age: fires older than ``max(catchup_window_s, grace_s)`` are
   *missed* (logged, skipped); of the rest only the newest runs (*coalesced*);
3. applies the overlap policy (``skip``: not while a run of the schedule is queued or
   running; ``buffer_one``: keep one fire waiting and start it when the run ends;
   ``allow``);
4. claims the fires by inserting ``(schedule_id, fire_time)`` into ``schedule_fires``,
   together with the ``queued`` rows of their runs, in one transaction. The unique key
   makes a fire that another replica (or an earlier life of this one) claimed a no-op;
5. sends the won runs in one pipelined round trip, then moves ``next_fire_at`` on. If
   the broker refuses, the claims and rows are removed and ``next_fire_at`` stays, so
   the next tick tries again (within the grace period).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, case, delete, func, update

from jobs_service.client import EnqueueError, JobsClient, RunRequest
from jobs_service.core.errors import JobsError
from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.column_types import UTCDateTime
from jobs_service.infrastructure.models import JobRun, Schedule, ScheduleFire
from jobs_service.infrastructure.repositories import runs
from jobs_service.infrastructure.repositories import schedules as repo
from jobs_service.scheduler.specs import timing_for

if TYPE_CHECKING:
    from jobs_service.infrastructure.database import Database

__all__ = ["FireDispatcher", "TickReport"]

_MAX_ENUMERATED = 10_000
_LOOKAHEAD = timedelta(milliseconds=50)
_log = get_logger("jobs_service.scheduler")


@dataclass(slots=True)
class TickReport:
    """What one tick did (for tests, metrics and benchmarks)."""

    fired: list[tuple[int, datetime, str]] = field(default_factory=list)
    skipped: list[tuple[int, datetime, str]] = field(default_factory=list)
    missed: int = 0


@dataclass(slots=True)
class _Decision:
    schedule: Schedule
    fire_time: datetime | None
    missed: list[datetime]
    next_fire_at: datetime | None


class FireDispatcher:
    """Fires due schedules; one per scheduler process."""

    def __init__(
        self,
        database: Database,
        client: JobsClient,
        *,
        replica: str,
        refresh_s: float = 1.0,
        grace_s: float = 5.0,
    ) -> None:
        self._database = database
        self._client = client
        self._replica = replica
        self._refresh_s = refresh_s
        self._grace_s = grace_s
        self._schedules: list[Schedule] = []
        self._loaded_at = -math.inf
        self._sent_at = datetime.now(UTC)  # when the last batch reached the broker

    async def refresh(self) -> None:
        """Re-read the schedules (enabled or paused, not finished)."""
        async with self._database.sessions() as session:
            self._schedules = await repo.enabled_schedules(session)
        self._loaded_at = time.monotonic()

    async def tick(self, now: datetime | None = None) -> TickReport:
        """Fire whatever is due at ``now`` (default: the current time)."""
        now = now or datetime.now(UTC)
        if not self._schedules or self._refresh_s == 0:
            await self.refresh()
        report = TickReport()
        # TaskIQ's loop wakes on the wall-clock second, but its sleep runs on the monotonic
        # clock and may end a fraction of a millisecond early: without a small look-ahead
        # such a fire would wait a whole extra tick.
        horizon = now + _LOOKAHEAD
        due = [
            s for s in self._schedules if s.next_fire_at is not None and s.next_fire_at <= horizon
        ]
        if due:
            await self._fire([self._decide(s, horizon) for s in due], now, report)
        if any(s.overlap == "buffer_one" for s in self._schedules):
            await self._release_buffered(now, report)
        # Re-read after firing, not before: due fires go out on the cached copy at once,
        # and API changes still reach this replica before its next tick.
        if time.monotonic() - self._loaded_at >= self._refresh_s:
            await self.refresh()
        return report

    def _decide(self, schedule: Schedule, now: datetime) -> _Decision:
        timing = timing_for(schedule)
        fires: list[datetime] = []
        current = schedule.next_fire_at
        while current is not None and current <= now and len(fires) < _MAX_ENUMERATED:
            fires.append(current)
            current = timing.next_after(current)
        window = max(float(schedule.catchup_window_s), self._grace_s)
        eligible = [fire for fire in fires if (now - fire).total_seconds() <= window]
        missed = [fire for fire in fires if (now - fire).total_seconds() > window]
        return _Decision(
            schedule, eligible[-1] if eligible else None, missed, timing.next_after(now)
        )

    async def _fire(self, decisions: list[_Decision], now: datetime, report: TickReport) -> None:
        async with self._database.engine.begin() as connection:
            active = await repo.active_run_counts(
                connection,
                [
                    d.schedule.id
                    for d in decisions
                    if d.fire_time is not None and d.schedule.overlap != "allow"
                ],
            )
            buffered = (
                {fire.schedule_id for fire in await repo.buffered_fires(connection)}
                if any(d.schedule.overlap == "buffer_one" for d in decisions)
                else set()
            )
            claims, requests = self._claims(decisions, active, buffered)
            won = await repo.claim_fires(connection, claims, self._replica, now)
            sent = [requests[key] for key in won if key in requests]
            await runs.insert_queued_runs(connection, [r.queued_row() for r in sent])
        try:
            await self._client.send(sent)
            self._sent_at = datetime.now(UTC)
        except EnqueueError as exc:
            await self._unclaim(sent)
            _log.error("schedule-enqueue-failed", error=str(exc), fires=len(sent))
            # Keep next_fire_at of the schedules whose runs were not sent: the next
            # tick retries them (within the grace period or catch-up window).
            unsent = {request.schedule_id for request in sent}
            await self._advance([d for d in decisions if d.schedule.id not in unsent], now)
            won = set()
            requests = {}
        else:
            await self._advance(decisions, now)
        self._report(decisions, claims=claims, won=won, requests=requests, now=now, report=report)

    def _claims(
        self, decisions: list[_Decision], active: dict[int, int], buffered: set[int]
    ) -> tuple[list[repo.FireClaim], dict[tuple[int, datetime], RunRequest]]:
        claims: list[repo.FireClaim] = []
        requests: dict[tuple[int, datetime], RunRequest] = {}
        for decision in decisions:
            schedule, fire_time = decision.schedule, decision.fire_time
            if fire_time is None:
                continue
            if not schedule.enabled:
                continue  # paused: its fires pass without a claim; next_fire_at moves on
            busy = active.get(schedule.id, 0) > 0
            if busy and schedule.overlap == "skip":
                claims.append(repo.FireClaim(schedule.id, fire_time, "skipped", "overlap", None))
                continue
            if busy and schedule.overlap == "buffer_one":
                outcome = "skipped" if schedule.id in buffered else "buffered"
                claims.append(
                    repo.FireClaim(
                        schedule.id,
                        fire_time,
                        outcome,
                        "overlap" if outcome == "skipped" else None,
                        None,
                    )
                )
                continue
            try:
                request = self._client.prepare(
                    schedule.task,
                    schedule.kwargs,
                    source="schedule",
                    schedule_id=schedule.id,
                    scheduled_for=fire_time,
                )
            except JobsError as exc:
                _log.error(
                    "schedule-invalid", schedule_id=schedule.id, task=schedule.task, error=str(exc)
                )
                claims.append(
                    repo.FireClaim(schedule.id, fire_time, "skipped", "invalid_task", None)
                )
                continue
            claims.append(repo.FireClaim(schedule.id, fire_time, "enqueued", None, request.run_id))
            requests[(schedule.id, fire_time)] = request
        return claims, requests

    async def _unclaim(self, sent: list[RunRequest]) -> None:
        async with self._database.engine.begin() as connection:
            await repo.release_fires(
                connection,
                [
                    (request.schedule_id or 0, request.scheduled_for or datetime.now(UTC))
                    for request in sent
                ],
            )
            await connection.execute(
                delete(JobRun).where(JobRun.run_id.in_([request.run_id for request in sent]))
            )

    async def _advance(self, decisions: list[_Decision], now: datetime) -> None:
        """Move ``next_fire_at`` on, only where it still holds the value this replica
        read: an operator's edit or pause in between wins, and a second replica doing
        the same advance is a no-op."""
        if not decisions:
            return
        rows = [
            {
                "b_id": d.schedule.id,
                "b_old": d.schedule.next_fire_at,
                "b_next": d.next_fire_at,
                "b_last": d.fire_time or d.schedule.last_fire_at,
                "b_finished": now if d.next_fire_at is None else None,
            }
            for d in decisions
        ]
        finished = bindparam("b_finished", type_=UTCDateTime())
        stmt = (
            update(Schedule)
            .where(Schedule.id == bindparam("b_id"), Schedule.next_fire_at == bindparam("b_old"))
            .values(
                next_fire_at=bindparam("b_next"),
                last_fire_at=bindparam("b_last"),
                finished_at=func.coalesce(finished, Schedule.finished_at),
                enabled=case((finished.is_not(None), False), else_=Schedule.enabled),
            )
        )
        async with self._database.engine.begin() as connection:
            await connection.execute(stmt, rows)
        for decision in decisions:  # keep the local copy in step until the next refresh
            decision.schedule.next_fire_at = decision.next_fire_at
            if decision.next_fire_at is None:
                decision.schedule.enabled = False
                decision.schedule.finished_at = now

    def _report(
        self,
        decisions: list[_Decision],
        *,
        claims: list[repo.FireClaim],
        won: set[tuple[int, datetime]],
        requests: dict[tuple[int, datetime], RunRequest],
        now: datetime,
        report: TickReport,
    ) -> None:
        by_id = {d.schedule.id: d.schedule for d in decisions}
        for decision in decisions:
            schedule = decision.schedule
            if decision.missed:
                report.missed += len(decision.missed)
                _log.warning(
                    "schedule-missed",
                    schedule_id=schedule.id,
                    schedule=schedule.name,
                    task=schedule.task,
                    missed=len(decision.missed),
                    first=decision.missed[0].isoformat(),
                    last=decision.missed[-1].isoformat(),
                    catchup_window_s=schedule.catchup_window_s,
                )
            if decision.fire_time is not None and not schedule.enabled:
                report.skipped.append((schedule.id, decision.fire_time, "paused"))
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
            if key not in won:
                if requests or claim.outcome != "enqueued":
                    report.skipped.append((*key, "already_claimed"))
                    _log.debug("schedule-skipped", reason="already_claimed", **fields)
            elif claim.outcome == "enqueued" and key in requests:
                lateness = round((self._sent_at - claim.fire_time).total_seconds() * 1000, 1)
                report.fired.append((*key, requests[key].run_id))
                _log.info(
                    "schedule-fired", run_id=requests[key].run_id, lateness_ms=lateness, **fields
                )
            else:
                report.skipped.append((*key, claim.reason or claim.outcome))
                _log.info("schedule-skipped", reason=claim.reason or claim.outcome, **fields)

    async def _release_buffered(self, now: datetime, report: TickReport) -> None:
        async with self._database.engine.begin() as connection:
            fires = await repo.buffered_fires(connection)
            if not fires:
                return
            active = await repo.active_run_counts(connection, [fire.schedule_id for fire in fires])
            schedules = {s.id: s for s in self._schedules}
            sent = []
            for fire in fires:
                schedule = schedules.get(fire.schedule_id)
                if schedule is None or active.get(fire.schedule_id, 0):
                    continue
                request = self._client.prepare(
                    schedule.task,
                    schedule.kwargs,
                    source="schedule",
                    schedule_id=schedule.id,
                    scheduled_for=fire.fire_time,
                )
                if await repo.take_buffered_fire(connection, fire.id, request.run_id):
                    sent.append(request)
            await runs.insert_queued_runs(connection, [r.queued_row() for r in sent])
        if not sent:
            return
        try:
            await self._client.send(sent)
        except EnqueueError as exc:
            _log.error("schedule-enqueue-failed", error=str(exc), fires=len(sent))
            async with self._database.engine.begin() as connection:
                for request in sent:
                    await connection.execute(
                        update(ScheduleFire)
                        .where(ScheduleFire.run_id == request.run_id)
                        .values(outcome="buffered", run_id=None)
                    )
                await connection.execute(
                    delete(JobRun).where(JobRun.run_id.in_([request.run_id for request in sent]))
                )
            return
        for request in sent:
            report.fired.append(
                (request.schedule_id or 0, request.scheduled_for or now, request.run_id)
            )
            _log.info(
                "schedule-fired",
                schedule_id=request.schedule_id,
                task=request.info.name,
                run_id=request.run_id,
                buffered=True,
                fire_time=(request.scheduled_for or now).isoformat(),
            )
