"""Built-in jobs that keep the service itself healthy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated

from pydantic import Field
from taskiq import AsyncBroker, Context, TaskiqDepends

from jobs_service.agents import health_probe, run_history, runtime, settings, unconfirmed_sends
from jobs_service.broker import broker
from jobs_service.core.logging import get_logger
from jobs_service.core.ports import HealthProbe, RunHistory, UnconfirmedSends
from jobs_service.core.settings import Settings
from jobs_service.core.summary import Summary, make_summary
from jobs_service.infrastructure.pending_runs import pending_runs
from jobs_service.infrastructure.repositories import runs
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.infrastructure.workers import LAST_SEEN_KEPT, live_workers, prune_last_seen

__all__ = [
    "check_system_health",
    "cleanup_old_runs",
    "recover_orphaned_runs",
    "resend_unconfirmed_runs",
]

_log = get_logger("jobs_service.tasks.maintenance")
#: A run marked unconfirmed is left this long to a repeat of its own submit.
UNCONFIRMED_GRACE = timedelta(seconds=30)


@broker.task(
    task_name="cleanup_old_runs",
    timeout=1800,
    category="maintenance",
    schedule="17 3 * * *",
)
async def cleanup_old_runs(
    history: Annotated[RunHistory, TaskiqDepends(run_history)],
    config: Annotated[Settings, TaskiqDepends(settings)],
    retention_days: Annotated[int, Field(ge=1, le=36_500)] | None = None,
) -> Summary:
    """Delete finished runs, and the webhook events that started them, older than the
    retention period; and audit entries older than their own, if one is set.

    Schedule: daily at 03:17 UTC (off the hour, away from other nightly jobs).
    ``retention_days`` defaults to the ``runs.retention_days`` setting. Queued and
    running runs are never deleted, nor events whose runs have not ended; events are
    kept at least eight days, as they recognise a sender's retries. The audit log
    follows ``audit.retention_days`` only (an audit trail usually has to outlive the
    runs it mentions), and is kept for good when that is unset. Returns ``deleted``
    (runs), ``events_deleted``, ``audit_deleted`` and ``errors``.
    """
    days = retention_days if retention_days is not None else config.runs.retention_days
    if days < 1:
        msg = "retention_days must be at least 1"
        raise ValueError(msg)
    now = datetime.now(UTC)
    cutoff = now - timedelta(days=days)
    deleted = await history.delete_finished_before(cutoff)
    events_deleted = await history.delete_finished_events_before(cutoff)
    audit_days = config.audit.retention_days
    audit_deleted = (
        await history.delete_audit_entries_before(now - timedelta(days=audit_days))
        if audit_days is not None
        else 0
    )
    return make_summary(
        deleted=deleted,
        events_deleted=events_deleted,
        audit_deleted=audit_deleted,
        retention_days=days,
    )


@broker.task(
    task_name="check_system_health",
    timeout=60,
    category="maintenance",
    schedule="*/5 * * * *",
)
async def check_system_health(
    probe: Annotated[HealthProbe, TaskiqDepends(health_probe)],
    history: Annotated[RunHistory, TaskiqDepends(run_history)],
    config: Annotated[Settings, TaskiqDepends(settings)],
    stuck_after_s: Annotated[int, Field(ge=1, le=30 * 86_400)] | None = None,
) -> Summary:
    """Check the database and the broker, and count runs stuck in queued or running.

    Schedule: every 5 minutes. A run is stuck when it has been queued or running longer
    than ``stuck_after_s`` (default: the ``runs.stuck_after_s`` setting). Returns
    ``checked``, ``healthy``, ``stuck_runs`` and ``errors`` (failed checks).
    """
    threshold = stuck_after_s if stuck_after_s is not None else config.runs.stuck_after_s
    results = await probe.check_all()
    for result in results:
        if not result.ok:
            _log.warning("health-check-failed", check=result.name, detail=result.detail)
    stuck = 0
    if any(result.ok and result.name == "database" for result in results):
        stuck = await history.count_stuck(datetime.now(UTC) - timedelta(seconds=threshold))
    if stuck:
        _log.warning("stuck-runs", count=stuck, threshold_s=threshold)
    healthy = sum(result.ok for result in results)
    return make_summary(
        checked=len(results),
        healthy=healthy,
        stuck_runs=stuck,
        errors=len(results) - healthy,
    )


@broker.task(
    task_name="recover_orphaned_runs",
    timeout=60,
    category="maintenance",
    schedule="* * * * *",
)
async def recover_orphaned_runs(
    current: Annotated[Runtime, TaskiqDepends(runtime)],
    context: Annotated[Context, TaskiqDepends()],
) -> Summary:
    """Fail runs left `running` by a worker that died after acknowledging them.

    Schedule: every minute. A killed worker's unacknowledged messages are re-run by
    another worker (reclaim), so a run whose message is still pending in the stream is
    left alone, however long it waits for a slot. What remains `running` on a worker
    without a heartbeat, its message gone, had its outcome lost between acknowledgement
    and record (a worker outside the acknowledgement gate). Such runs become `failed`
    (WorkerLost) and can be retried from the API. A worker counts as dead once its last
    heartbeat is older than a reclaim takes. Returns checked, recovered and errors.
    """
    prefix = current.settings.redis_prefix
    workers = await live_workers(context.broker, prefix)
    if workers is None:
        return make_summary(checked=0, recovered=0)  # embedded: the process is the worker
    alive = {name for worker in workers for name in worker.names}
    if current.worker_name not in alive:
        # Our own heartbeat is missing: Redis is in trouble, so are the others' — judge
        # nobody dead on that evidence.
        return make_summary(checked=0, recovered=0, errors=1)
    options = current.settings.broker
    grace = timedelta(seconds=options.idle_timeout_s + options.reclaim_interval_s + 60)
    now = datetime.now(UTC)
    seen = await prune_last_seen(context.broker, prefix, before=now - LAST_SEEN_KEPT)
    error = {"type": "WorkerLost", "message": "its worker stopped; the outcome was not recorded"}
    async with current.database.engine.begin() as connection:
        candidates = await runs.workers_of_old_runs(connection, started_before=now - grace)
        dead = [
            name
            for name in candidates
            if name not in alive and seen.get(name, 0) < (now - grace).timestamp()
        ]
        recovered = await runs.fail_orphaned(
            connection,
            dead_workers=dead,
            started_before=now - grace,
            error=error,
            now=now,
            still_pending=partial(_still_pending, context.broker),
        )
    if recovered:
        _log.warning("runs-orphaned", runs=len(recovered), run_ids=recovered[:20])
    return make_summary(checked=len(workers), recovered=len(recovered))


async def _still_pending(broker: AsyncBroker, run_ids: list[str]) -> set[str]:
    pending = await pending_runs(broker, run_ids)
    if pending:
        _log.info(
            "runs-orphaned-pending",
            runs=len(pending),
            run_ids=sorted(pending)[:20],
            message="left running: their messages are pending and will run again",
        )
    return pending


@broker.task(
    task_name="resend_unconfirmed_runs",
    timeout=60,
    category="maintenance",
    schedule="* * * * *",
)
async def resend_unconfirmed_runs(
    outbox: Annotated[UnconfirmedSends, TaskiqDepends(unconfirmed_sends)],
) -> Summary:
    """Send again the queued runs whose send the broker never confirmed.

    Schedule: every minute. A keyed submit or an operator's retry whose send timed out,
    or lost its connection after the message was written, keeps its run `queued` and
    marked: its message may be in the stream, or not. Unless a repeat of the submit did
    it first (within 30 s), each is sent again here, with the same run id; such sends
    add a run's message once at most, so a run whose first send did land is not queued
    twice. Returns checked, resent, started (a worker had started it meanwhile: it is
    unmarked) and errors (runs whose task is not registered here: left marked).
    """
    result = await outbox.resend_unconfirmed(datetime.now(UTC) - UNCONFIRMED_GRACE)
    return make_summary(
        checked=result.checked,
        resent=result.sent,
        started=result.started,
        errors=result.unsendable,
    )
