"""Label schedules follow the code; operators' pauses survive a sync; a label that cannot
become a working schedule is named, and never stops the sync."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from jobs_service.broker import broker
from jobs_service.core.summary import Summary, make_summary
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import Schedule
from jobs_service.scheduler.labels import (
    REMOVED_NOTE,
    label_schedule_problems,
    sync_label_schedules,
)
from jobs_service.tasks.registry import find_task
from tests.support.logs import logged_lines
from tests.support.scheduling import harness

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio


async def _report() -> Summary:
    """A task whose labels the test rewrites."""
    return make_summary()


async def _sync_account(account: str) -> Summary:
    """A task that cannot run without an argument."""
    del account
    return make_summary()


async def _labels(database: Database) -> dict[str, Schedule]:
    async with database.sessions() as session:
        rows = await session.execute(select(Schedule).where(Schedule.source == "label"))
        return {s.name: s for s in rows.scalars()}


async def test_sync_adds_updates_disables_and_revives(
    make_settings: Callable[..., Settings],
) -> None:
    """A task's crons appear, follow edits, are disabled when removed, return when back."""
    settings = make_settings()
    database = Database(settings.database_url, settings.database)
    await migrate.upgrade(database)
    name = "send_weekly_report"
    try:
        broker.register_task(
            _report, name, schedule=["0 9 * * 1", "0 17 * * 5"], timezone="Europe/Berlin"
        )
        first = await sync_label_schedules(database, broker)
        labels = await _labels(database)
        assert first["added"] >= 2
        assert labels[name].cron == "0 9 * * 1"
        assert labels[f"{name}#2"].cron == "0 17 * * 5"
        assert labels[name].timezone == "Europe/Berlin"
        assert await sync_label_schedules(database, broker) == {
            "added": 0,
            "updated": 0,
            "disabled": 0,
        }

        broker.local_task_registry.pop(name)
        broker.register_task(_report, name, schedule="30 8 * * 1")
        edited = await sync_label_schedules(database, broker)
        labels = await _labels(database)
        assert edited == {"added": 0, "updated": 1, "disabled": 1}
        assert (labels[name].cron, labels[name].timezone) == ("30 8 * * 1", "UTC")
        assert labels[f"{name}#2"].enabled is False
        assert labels[f"{name}#2"].paused_note == REMOVED_NOTE

        broker.local_task_registry.pop(name)
        broker.register_task(_report, name, schedule=["30 8 * * 1", "0 17 * * 5"])
        await sync_label_schedules(database, broker)
        assert (await _labels(database))[f"{name}#2"].enabled is True
    finally:
        broker.local_task_registry.pop(name, None)
        await database.close()


async def test_an_operator_pause_survives_a_sync(make_settings: Callable[..., Settings]) -> None:
    """Pausing a label schedule is the operator's call; a restart does not undo it."""
    settings = make_settings()
    database = Database(settings.database_url, settings.database)
    await migrate.upgrade(database)
    try:
        await sync_label_schedules(database, broker)
        async with database.sessions.begin() as session:
            health = (
                await session.execute(
                    select(Schedule).where(Schedule.name == "check_system_health")
                )
            ).scalar_one()
            health.enabled, health.paused_note = False, "maintenance window"
        await sync_label_schedules(database, broker)
        assert (await _labels(database))["check_system_health"].enabled is False
    finally:
        await database.close()


async def test_a_label_schedule_whose_name_an_api_schedule_holds_is_left_out(
    make_settings: Callable[..., Settings], capfd: pytest.CaptureFixture[str]
) -> None:
    """An API schedule took the name before a deploy gave that task a label (or before
    the API refused such names): every scheduler start syncs labels, so the sync logs
    the clash and leaves that one label schedule out instead of failing the start."""
    name = "send_weekly_report"
    async with harness(make_settings()) as h:
        api = await h.create(
            name=name,
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "interval", "seconds": 60},
        )
        broker.register_task(_report, name, schedule=["0 9 * * 1", "0 17 * * 5"])
        try:
            counts = await sync_label_schedules(h.database, broker)
            again = await sync_label_schedules(h.database, broker)
            labels = await _labels(h.database)
            kept = await h.reload(api.id)
        finally:
            broker.local_task_registry.pop(name, None)
    assert name not in labels
    assert labels[f"{name}#2"].cron == "0 17 * * 5"
    assert "check_system_health" in labels
    assert counts["added"] == len(labels)
    assert again == {"added": 0, "updated": 0, "disabled": 0}
    assert (kept.source, kept.task) == ("api", "count_items")
    taken = [line for line in logged_lines(capfd) if "label-schedule-name-taken" in line]
    assert len(taken) == 2  # logged at each start while it lasts
    assert f"schedule {api.id} (an API schedule) is named '{name}'" in taken[0]


async def test_a_label_in_a_zone_hosts_read_differently_is_left_out(
    make_settings: Callable[..., Settings], capfd: pytest.CaptureFixture[str]
) -> None:
    """``localtime`` is each scheduler host's own zone, so replicas on hosts in other
    zones would fire it at different instants: the sync logs it and leaves it out."""
    settings = make_settings()
    database = Database(settings.database_url, settings.database)
    await migrate.upgrade(database)
    broker.register_task(_report, "send_local_report", schedule="0 9 * * *", timezone="localtime")
    try:
        await sync_label_schedules(database, broker)
        labels = await _labels(database)
    finally:
        broker.local_task_registry.pop("send_local_report", None)
        await database.close()
    assert "send_local_report" not in labels
    assert "check_system_health" in labels
    invalid = [line for line in logged_lines(capfd) if "label-schedule-invalid" in line]
    assert len(invalid) == 1
    assert "timezone 'localtime' is not a place" in invalid[0]


async def test_a_synced_label_that_becomes_unusable_is_paused_with_the_reason(
    make_settings: Callable[..., Settings],
) -> None:
    """A label schedule stored earlier whose label this release refuses (its zone is
    ``localtime``): its row is paused saying why, not as "removed from the code"; once
    the label is usable again the next sync resumes it."""
    settings = make_settings()
    database = Database(settings.database_url, settings.database)
    await migrate.upgrade(database)
    try:
        broker.register_task(_report, "send_local_report", schedule="0 9 * * *")
        await sync_label_schedules(database, broker)
        broker.register_task(
            _report, "send_local_report", schedule="0 9 * * *", timezone="localtime"
        )
        await sync_label_schedules(database, broker)
        paused = (await _labels(database))["send_local_report"]
        broker.register_task(_report, "send_local_report", schedule="0 9 * * *")
        await sync_label_schedules(database, broker)
        resumed = (await _labels(database))["send_local_report"]
    finally:
        broker.local_task_registry.pop("send_local_report", None)
        await database.close()
    assert not paused.enabled
    assert paused.paused_note is not None
    assert paused.paused_note.startswith(
        "label cannot be a schedule: timezone 'localtime' is not a place"
    )
    assert resumed.enabled
    assert resumed.paused_note is None


def test_label_problems_name_the_cron_the_zone_and_required_arguments() -> None:
    """What ``jobsctl check`` reports for schedule labels that could never fire or
    whose every fire would be skipped (a label fire passes no arguments)."""
    broker.register_task(_sync_account, "sync_account", schedule=["*/5 * * * *", "61 * * * *"])
    broker.register_task(_report, "send_local_report", schedule="0 9 * * *", timezone="localtime")
    try:
        arguments = label_schedule_problems(find_task(broker, "sync_account"))
        zone = label_schedule_problems(find_task(broker, "send_local_report"))
    finally:
        broker.local_task_registry.pop("sync_account", None)
        broker.local_task_registry.pop("send_local_report", None)
    assert arguments == [
        "schedule label '61 * * * *': cron '61 * * * *': minute 61 is out of range 0-59",
        "schedule label fires with no arguments, but invalid kwargs for sync_account: "
        "account: Field required",
    ]
    assert zone == [
        "schedule label '0 9 * * *': timezone 'localtime' is not a place and differs "
        "between hosts (use an IANA name such as Europe/Berlin)"
    ]
    assert label_schedule_problems(find_task(broker, "check_system_health")) == []


async def test_a_label_on_a_task_with_required_arguments_is_named_at_start(
    make_settings: Callable[..., Settings], capfd: pytest.CaptureFixture[str]
) -> None:
    """A label fire passes no arguments, so every fire of this one will be skipped: the
    start says so once, and the schedule is still synced, for operators to see."""
    settings = make_settings()
    database = Database(settings.database_url, settings.database)
    await migrate.upgrade(database)
    broker.register_task(_sync_account, "sync_account", schedule="*/5 * * * *")
    try:
        await sync_label_schedules(database, broker)
        labels = await _labels(database)
    finally:
        broker.local_task_registry.pop("sync_account", None)
        await database.close()
    assert labels["sync_account"].cron == "*/5 * * * *"
    invalid = [line for line in logged_lines(capfd) if "label-schedule-invalid" in line]
    assert len(invalid) == 1
    assert "invalid kwargs for sync_account: account: Field required" in invalid[0]
