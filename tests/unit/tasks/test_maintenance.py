"""The built-in maintenance jobs do what their summaries say."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from jobs_service.broker import broker
from jobs_service.core.ids import new_run_id
from jobs_service.gateway import create_app
from jobs_service.infrastructure.models import ScheduleFire
from jobs_service.infrastructure.repositories import audit, runs
from tests.conftest import serve_app
from tests.support import webhook_events
from tests.support.run_events import finished_event

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC)


def finished(days_ago: float, status: str = "succeeded") -> runs.RunEvent:
    at = NOW - timedelta(days=days_ago)
    return finished_event(at=at, status=status, summary={"errors": 0})


def queued(seconds_ago: float) -> runs.QueuedRun:
    return runs.QueuedRun(
        run_id=new_run_id(),
        task="count_items",
        kwargs={},
        source="api",
        queued_at=NOW - timedelta(seconds=seconds_ago),
    )


async def run_task(client: httpx.AsyncClient, name: str, **kwargs: Any) -> dict[str, Any]:
    run_id = (await client.post(f"/v1/tasks/{name}", json={"kwargs": kwargs})).json()["run_id"]
    for _ in range(200):
        run: dict[str, Any] = (await client.get(f"/v1/runs/{run_id}")).json()
        if run["status"] in ("succeeded", "failed"):
            return run
        await asyncio.sleep(0.02)
    raise AssertionError(run)


async def test_cleanup_deletes_only_old_finished_runs(
    make_settings: Callable[..., Settings],
) -> None:
    """Old succeeded/failed runs go; recent ones and old queued ones stay."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        database = app.state.runtime.database
        old = [finished(40), finished(31, "failed"), finished(35)]
        keep = [finished(2), finished(29)]
        async with database.engine.begin() as connection:
            await runs.upsert_run_events(connection, [*old, *keep])
            await runs.insert_queued_runs(connection, [queued(45 * 86400)])
        run = await run_task(client, "cleanup_old_runs", retention_days=30)
        remaining = {
            item["run_id"] for item in (await client.get("/v1/runs?limit=500")).json()["items"]
        }
    assert run["summary"] == {
        "deleted": 3,
        "events_deleted": 0,
        "audit_deleted": 0,
        "retention_days": 30,
        "errors": 0,
    }
    assert {event.run_id for event in keep} <= remaining
    assert not {event.run_id for event in old} & remaining
    assert len(remaining) == len(keep) + 2  # + the old queued run + the cleanup run itself


async def test_a_run_deleted_by_retention_leaves_its_id_unused(
    make_settings: Callable[..., Settings],
) -> None:
    """Once retention has deleted every run, the next run still gets a new numeric id,
    not the deleted newest run's (which pages, links and log lines may still name)."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        first = await run_task(client, "count_items", items=["a"])
        async with app.state.runtime.database.sessions.begin() as session:
            cutoff = datetime.now(UTC) + timedelta(seconds=1)
            deleted = await runs.delete_finished_before(session, cutoff, batch_size=100)
        second = await run_task(client, "count_items", items=["b"])
    assert deleted == 1
    assert second["id"] > first["id"]


async def test_cleanup_uses_the_retention_setting(make_settings: Callable[..., Settings]) -> None:
    """Without an argument the runs.retention_days setting applies."""
    app = create_app(
        make_settings(runs={"retention_days": 3}), broker=broker, embedded=True, scheduler=False
    )
    async with serve_app(app) as client:
        async with app.state.runtime.database.engine.begin() as connection:
            await runs.upsert_run_events(connection, [finished(4), finished(1)])
        run = await run_task(client, "cleanup_old_runs")
    assert run["summary"] == {
        "deleted": 1,
        "events_deleted": 0,
        "audit_deleted": 0,
        "retention_days": 3,
        "errors": 0,
    }


async def test_fire_claims_are_kept_eight_days_whatever_the_runs_retention(
    make_settings: Callable[..., Settings],
) -> None:
    """A day's run retention must not take fire claims with it: a scheduler coming back
    within a 7-day catch-up window would fire those times again. Claims older than
    eight days go."""
    app = create_app(
        make_settings(runs={"retention_days": 1}), broker=broker, embedded=True, scheduler=False
    )
    async with serve_app(app) as client:
        schedule = (
            await client.post(
                "/v1/schedules",
                json={
                    "name": "claims",
                    "task": "count_items",
                    "kwargs": {"items": []},
                    "schedule": {"type": "interval", "seconds": 3600},
                },
            )
        ).json()
        fires = {days: (NOW - timedelta(days=days)).replace(microsecond=0) for days in (3, 9)}
        async with app.state.runtime.database.sessions.begin() as session:
            session.add_all(
                ScheduleFire(
                    schedule_id=schedule["id"],
                    fire_time=at,
                    outcome="skipped",
                    claimed_by="replica-a",
                    claimed_at=at,
                )
                for at in fires.values()
            )
        run = await run_task(client, "cleanup_old_runs")
        async with app.state.runtime.database.sessions() as session:
            kept = list(
                (
                    await session.execute(
                        select(ScheduleFire.fire_time).where(
                            ScheduleFire.schedule_id == schedule["id"]
                        )
                    )
                ).scalars()
            )
    assert run["status"] == "succeeded"
    assert kept == [fires[3]]


async def store_events(app: Any, events: dict[str, tuple[str, float]]) -> dict[str, int]:
    """Store one webhook event per name, each ``(status, days since it last changed)``;
    returns ``name -> id``."""
    states = {name: (status, NOW - timedelta(days=days)) for name, (status, days) in events.items()}
    async with app.state.runtime.database.engine.begin() as connection:
        stored = await webhook_events.store_events(connection, states)
    return {name: event.id for name, event in stored.items()}


async def test_cleanup_deletes_old_settled_webhook_events(
    make_settings: Callable[..., Settings],
) -> None:
    """Processed and failed events older than the retention go; recent ones, and events
    whose runs have not ended (accepted, enqueued) stay, however old."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        ids = await store_events(
            app,
            {
                "old-processed": ("processed", 40),
                "old-failed": ("failed", 31),
                "recent-processed": ("processed", 29),
                "old-accepted": ("accepted", 60),
                "old-enqueued": ("enqueued", 60),
            },
        )
        run = await run_task(client, "cleanup_old_runs", retention_days=30)
        listed = (await client.get("/v1/webhooks/events?limit=500")).json()["items"]
    assert run["summary"]["events_deleted"] == 2
    assert {item["id"] for item in listed} == {
        ids[name] for name in ("recent-processed", "old-accepted", "old-enqueued")
    }


async def test_webhook_events_are_kept_eight_days_whatever_the_runs_retention(
    make_settings: Callable[..., Settings],
) -> None:
    """An event is what recognises a sender's retry as a duplicate: a day's run
    retention must not take it before senders stop retrying."""
    app = create_app(
        make_settings(runs={"retention_days": 1}), broker=broker, embedded=True, scheduler=False
    )
    async with serve_app(app) as client:
        ids = await store_events(app, {"three-days": ("processed", 3), "nine-days": ("failed", 9)})
        run = await run_task(client, "cleanup_old_runs")
        listed = (await client.get("/v1/webhooks/events?limit=500")).json()["items"]
    assert run["summary"]["events_deleted"] == 1
    assert [item["id"] for item in listed] == [ids["three-days"]]


async def store_audit_entries(app: Any, ages_in_days: list[float]) -> None:
    async with app.state.runtime.database.engine.begin() as connection:
        await audit.insert_entries(
            connection,
            [
                audit.NewAuditEntry(
                    at=NOW - timedelta(days=days),
                    actor="ops",
                    action="POST /v1/tasks/{name}",
                    target=f"{days}-days",
                    outcome=202,
                )
                for days in ages_in_days
            ],
        )


async def audit_targets(client: httpx.AsyncClient) -> set[str]:
    items = (await client.get("/v1/audit?limit=500&actor=ops")).json()["items"]
    return {item["target"] for item in items}


async def test_audit_entries_follow_their_own_retention(
    make_settings: Callable[..., Settings],
) -> None:
    """With ``audit.retention_days`` set, older entries go, whatever the runs'
    retention; younger ones stay."""
    app = create_app(
        make_settings(runs={"retention_days": 1}, audit={"retention_days": 90}),
        broker=broker,
        embedded=True,
        scheduler=False,
    )
    async with serve_app(app) as client:
        await store_audit_entries(app, [200, 91, 89, 2])
        run = await run_task(client, "cleanup_old_runs")
        left = await audit_targets(client)
    assert run["summary"]["audit_deleted"] == 2
    assert left == {"89-days", "2-days"}


async def test_audit_log_is_kept_for_good_without_a_retention(
    make_settings: Callable[..., Settings],
) -> None:
    """Unset (the default), the audit log outlives any run retention."""
    app = create_app(
        make_settings(runs={"retention_days": 1}), broker=broker, embedded=True, scheduler=False
    )
    async with serve_app(app) as client:
        await store_audit_entries(app, [3650, 40])
        run = await run_task(client, "cleanup_old_runs")
        left = await audit_targets(client)
    assert run["summary"]["audit_deleted"] == 0
    assert left == {"3650-days", "40-days"}


async def test_health_check_counts_stuck_runs(make_settings: Callable[..., Settings]) -> None:
    """A run queued longer than stuck_after_s is stuck; a fresh one is not."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        async with app.state.runtime.database.engine.begin() as connection:
            await runs.insert_queued_runs(connection, [queued(7200), queued(5)])
        default = await run_task(client, "check_system_health")
        strict = await run_task(client, "check_system_health", stuck_after_s=1)
    assert default["summary"] == {"checked": 2, "healthy": 2, "stuck_runs": 1, "errors": 0}
    assert strict["summary"]["stuck_runs"] == 2
