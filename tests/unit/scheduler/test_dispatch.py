"""The fire dispatcher with a controlled clock: claims, catch-up, overlap, pause, once,
and one schedule's trouble (unreadable timing, a pause or delete mid-tick) kept to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import update

from jobs_service.broker import broker
from jobs_service.client import EnqueueError, JobsClient
from jobs_service.infrastructure.models import Schedule
from jobs_service.infrastructure.repositories import runs as runs_repo
from jobs_service.infrastructure.repositories import schedules as schedules_repo
from jobs_service.scheduler.specs import SchedulePatch
from tests.support.logs import logged_lines
from tests.support.scheduling import committing_after_the_read, harness

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from jobs_service.client import RunRequest
    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)  # a Monday


async def test_an_interval_schedule_fires_once_per_due_time(
    make_settings: Callable[..., Settings],
) -> None:
    """Each tick at or after the fire time queues exactly one run for that time."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            task="count_items",
            kwargs={"items": ["a"]},
            schedule={"type": "interval", "seconds": 60},
        )
        await h.set_next_fire(schedule.id, T0)
        dispatcher = h.dispatcher()
        early = await dispatcher.tick(T0 - timedelta(seconds=1))
        first = await dispatcher.tick(T0 + timedelta(milliseconds=20))
        again = await dispatcher.tick(T0 + timedelta(milliseconds=900))
        await broker.wait_all()  # type: ignore[attr-defined]
        runs = await h.runs_of(schedule.id)
        stored = await h.reload(schedule.id)
    assert early.fired == []
    assert again.fired == []
    assert [(sid, at) for sid, at, _ in first.fired] == [(schedule.id, T0)]
    assert len(runs) == 1
    assert runs[0].source == "schedule"
    assert runs[0].scheduled_for == T0
    assert runs[0].kwargs == {"items": ["a"]}
    assert runs[0].status == "succeeded"
    assert stored.last_fire_at == T0
    assert stored.next_fire_at is not None
    assert stored.next_fire_at > T0


async def test_two_replicas_fire_each_time_once(make_settings: Callable[..., Settings]) -> None:
    """Replicas ticking at the same moment: one wins the claim, the other skips."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "cron", "cron": "* * * * *"},
            overlap="allow",
        )
        one, two = h.dispatcher("replica-1"), h.dispatcher("replica-2")
        for minute in range(3):
            at = T0 + timedelta(minutes=minute)
            await h.set_next_fire(schedule.id, at)
            reports = [
                await one.tick(at + timedelta(seconds=0.1)),
                await two.tick(at + timedelta(seconds=0.2)),
            ]
            assert sum(len(report.fired) for report in reports) == 1
        runs = await h.runs_of(schedule.id)
        fires = await h.fires_of(schedule.id)
    assert [run.scheduled_for for run in runs] == [T0 + timedelta(minutes=m) for m in range(3)]
    assert len(fires) == 3


async def test_missed_fires_are_skipped_without_catchup(
    make_settings: Callable[..., Settings],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Scheduler away for 10 minutes, window 0: nothing runs, schedule-missed is logged."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            task="count_items", kwargs={"items": []}, schedule={"type": "cron", "cron": "* * * * *"}
        )
        await h.set_next_fire(schedule.id, T0)
        report = await h.dispatcher().tick(T0 + timedelta(minutes=10, seconds=30))
        runs = await h.runs_of(schedule.id)
        stored = await h.reload(schedule.id)
    assert report.fired == []
    assert report.missed == 11
    assert runs == []
    assert stored.next_fire_at == T0 + timedelta(minutes=11)
    assert '"schedule-missed"' in capfd.readouterr().err


async def test_catchup_window_coalesces_missed_fires_into_one_run(
    make_settings: Callable[..., Settings],
) -> None:
    """A window covering the gap runs once, for the newest missed fire."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "cron", "cron": "* * * * *"},
            catchup_window_s=3600,
        )
        await h.set_next_fire(schedule.id, T0)
        report = await h.dispatcher().tick(T0 + timedelta(minutes=10, seconds=30))
        again = await h.dispatcher().tick(T0 + timedelta(minutes=10, seconds=40))
        runs = await h.runs_of(schedule.id)
    assert [at for _, at, _ in report.fired] == [T0 + timedelta(minutes=10)]
    assert again.fired == []
    assert len(runs) == 1


async def test_overlap_skip_does_not_start_while_a_run_is_active(
    make_settings: Callable[..., Settings],
) -> None:
    """With overlap=skip a fire is skipped (and recorded) while a run is queued."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            task="count_items", kwargs={"items": []}, schedule={"type": "interval", "seconds": 60}
        )
        await h.add_active_run(schedule.id, "a" * 32, T0)
        await h.set_next_fire(schedule.id, T0)
        report = await h.dispatcher().tick(T0)
        fires = await h.fires_of(schedule.id)
    assert report.fired == []
    assert report.skipped == [(schedule.id, T0, "overlap")]
    assert [(f.outcome, f.reason) for f in fires] == [("skipped", "overlap")]


async def test_overlap_buffer_one_starts_the_fire_after_the_active_run(
    make_settings: Callable[..., Settings],
) -> None:
    """buffer_one keeps one fire waiting and queues it once the active run ends."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "cron", "cron": "* * * * *"},
            overlap="buffer_one",
        )
        await h.add_active_run(schedule.id, "b" * 32, T0)
        dispatcher = h.dispatcher()
        await h.set_next_fire(schedule.id, T0)
        first = await dispatcher.tick(T0)
        await h.set_next_fire(schedule.id, T0 + timedelta(minutes=1))
        second = await dispatcher.tick(T0 + timedelta(minutes=1))
        await h.finish_run("b" * 32, T0)
        released = await dispatcher.tick(T0 + timedelta(minutes=1, seconds=2))
        fires = await h.fires_of(schedule.id)
    assert first.fired == []
    assert second.fired == []
    assert [(f.outcome, f.reason) for f in fires] == [("enqueued", None), ("skipped", "overlap")]
    assert [at for _, at, _ in released.fired] == [T0]
    assert fires[0].run_id == released.fired[0][2]


async def test_paused_schedules_do_not_fire_and_resume_does_not_replay(
    make_settings: Callable[..., Settings],
) -> None:
    """Paused: fires pass (logged as skipped); resumed: next fire is computed from now."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "interval", "seconds": 60},
            catchup_window_s=86400,
        )
        await h.service.update(schedule.id, SchedulePatch(enabled=False, paused_note="db work"))
        await h.set_next_fire(schedule.id, T0)
        paused = await h.dispatcher().tick(T0)
        resumed = await h.service.update(schedule.id, SchedulePatch(enabled=True))
        after = await h.dispatcher().tick(datetime.now(UTC))
        runs = await h.runs_of(schedule.id)
    assert paused.fired == []
    assert paused.skipped == [(schedule.id, T0, "paused")]
    assert after.fired == []
    assert runs == []
    assert resumed.paused_note is None
    assert resumed.next_fire_at is not None
    assert resumed.next_fire_at > datetime.now(UTC)


async def test_once_fires_once_and_never_again(make_settings: Callable[..., Settings]) -> None:
    """A one-off schedule fires at its time, is finished, and a new process won't refire."""
    async with harness(make_settings()) as h:
        at = datetime.now(UTC) + timedelta(hours=1)
        schedule = await h.create(
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "once", "at": at.isoformat()},
        )
        fired = await h.dispatcher().tick(at + timedelta(seconds=1))
        restarted = await h.dispatcher("another-life").tick(at + timedelta(seconds=2))
        stored = await h.reload(schedule.id)
        runs = await h.runs_of(schedule.id)
    assert len(fired.fired) == 1
    assert restarted.fired == []
    assert len(runs) == 1
    assert stored.enabled is False
    assert stored.finished_at is not None
    assert stored.next_fire_at is None


async def test_a_refused_send_stays_claimed_and_is_resent_with_the_same_run_id(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Broker down at fire time: the claim and its queued run stay (the outbox); a later
    tick sends that same run, so the fire is neither lost nor duplicated."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            task="count_items", kwargs={"items": []}, schedule={"type": "cron", "cron": "* * * * *"}
        )
        await h.set_next_fire(schedule.id, T0)
        client = h.app.state.client
        real_send = client.send

        async def refuse(*args: object, **kwargs: object) -> None:
            raise EnqueueError("broker down")

        monkeypatch.setattr(client, "send", refuse)
        dispatcher = h.dispatcher()
        failed = await dispatcher.tick(T0 + timedelta(seconds=1))
        queued = await h.runs_of(schedule.id)
        fires = await h.fires_of(schedule.id)
        monkeypatch.setattr(client, "send", real_send)
        too_soon = await dispatcher.tick(T0 + timedelta(seconds=2))
        resent = await dispatcher.tick(T0 + timedelta(seconds=4))
        runs = await h.runs_of(schedule.id)
        after = await h.fires_of(schedule.id)
    assert failed.fired == []
    assert [(r.status, r.scheduled_for) for r in queued] == [("queued", T0)]
    assert [(f.run_id, f.sent_at) for f in fires] == [(queued[0].run_id, None)]
    assert too_soon.resent == 0
    assert resent.resent == 1
    assert [(r.run_id, r.status) for r in runs] == [(queued[0].run_id, "succeeded")]
    assert after[0].sent_at is not None


async def test_changes_made_just_before_a_fire_are_seen_by_that_fires_tick(
    make_settings: Callable[..., Settings],
) -> None:
    """A replica that has just ticked sees, at its next tick a moment later, a schedule
    created, re-timed or deleted in between: a new schedule due then fires on time (not a
    tick later) and a deleted one neither fires nor stops the others."""
    async with harness(make_settings()) as h:
        doomed = await h.create(
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "cron", "cron": "* * * * *"},
            overlap="allow",
        )
        await h.set_next_fire(doomed.id, T0)
        dispatcher = h.dispatcher()
        before = await dispatcher.tick(T0 - timedelta(seconds=1))
        created = await h.create(
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "cron", "cron": "* * * * *"},
            overlap="allow",
        )
        await h.set_next_fire(created.id, T0)
        await h.service.delete(doomed.id)
        report = await dispatcher.tick(T0 + timedelta(milliseconds=10))
    assert before.fired == []
    assert [(sid, at) for sid, at, _ in report.fired] == [(created.id, T0)]


async def test_catch_up_after_a_long_outage_finds_the_window_fast(
    make_settings: Callable[..., Settings],
) -> None:
    """Eight days down with a one-hour window: one run, for the newest fire in the window."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "cron", "cron": "* * * * *"},
            catchup_window_s=3600,
        )
        await h.set_next_fire(schedule.id, T0)
        back = T0 + timedelta(days=8, seconds=30)
        report = await h.dispatcher().tick(back)
        runs = await h.runs_of(schedule.id)
    assert [at for _, at, _ in report.fired] == [T0 + timedelta(days=8)]
    assert len(runs) == 1
    assert report.missed >= 1000  # counted up to the cap, then skipped over in one jump


async def test_a_buffered_fire_is_dropped_not_run_when_the_schedule_is_paused(
    make_settings: Callable[..., Settings],
) -> None:
    """buffer_one keeps a fire waiting; pausing the schedule discards it."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "cron", "cron": "* * * * *"},
            overlap="buffer_one",
        )
        await h.add_active_run(schedule.id, "c" * 32, T0)
        await h.set_next_fire(schedule.id, T0)
        dispatcher = h.dispatcher()
        await dispatcher.tick(T0)
        buffered = [f.outcome for f in await h.fires_of(schedule.id)]
        await h.service.update(schedule.id, SchedulePatch(enabled=False))
        async with h.database.engine.begin() as connection:
            await runs_repo.fail_unfinished(
                connection, before=datetime.now(UTC), error={"type": "X", "message": "done"}
            )
        later = await dispatcher.tick(T0 + timedelta(seconds=5))
        fires = await h.fires_of(schedule.id)
    assert buffered == ["buffered"]
    assert later.fired == []
    assert fires == []


async def test_overlap_skip_with_a_real_slow_task(make_settings: Callable[..., Settings]) -> None:
    """While a slow run of the schedule is executing, its next fire is skipped; once it
    has finished, the following fire runs."""
    import asyncio  # noqa: PLC0415

    async with harness(make_settings()) as h:
        schedule = await h.create(
            task="sleep_for",
            kwargs={"seconds": 0.6},
            schedule={"type": "cron", "cron": "* * * * *"},
        )
        dispatcher = h.dispatcher()
        await h.set_next_fire(schedule.id, T0)
        first = await dispatcher.tick(T0)
        await asyncio.sleep(0.3)  # the run is executing and recorded as running
        await h.set_next_fire(schedule.id, T0 + timedelta(minutes=1))
        during = await dispatcher.tick(T0 + timedelta(minutes=1))
        runs_after_first = await h.runs_of(schedule.id)  # waits for the slow run to end
        await h.set_next_fire(schedule.id, T0 + timedelta(minutes=2))
        after = await dispatcher.tick(T0 + timedelta(minutes=2))
        runs = await h.runs_of(schedule.id)
    assert len(first.fired) == 1
    assert during.skipped == [(schedule.id, T0 + timedelta(minutes=1), "overlap")]
    assert [r.status for r in runs_after_first] == ["succeeded"]
    assert len(after.fired) == 1
    assert [r.scheduled_for for r in runs] == [T0, T0 + timedelta(minutes=2)]


@pytest.mark.parametrize(
    ("column", "value", "error"),
    [
        ("timezone", "America/Nowhere", "unknown timezone 'America/Nowhere'"),
        ("cron", "61 * * * *", "minute 61 is out of range"),
    ],
)
async def test_a_schedule_this_host_cannot_read_does_not_stop_the_others(
    make_settings: Callable[..., Settings],
    capfd: pytest.CaptureFixture[str],
    column: str,
    value: str,
    error: str,
) -> None:
    """A row this host cannot turn into fire times (a zone its tz database lacks, a cron
    another version accepted) is logged and skipped, once a minute while it lasts; the
    other schedules due in the same ticks fire."""
    async with harness(make_settings()) as h:
        healthy = await h.create(
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "cron", "cron": "* * * * *"},
            overlap="allow",
        )
        broken = await h.create(
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "cron", "cron": "* * * * *", "timezone": "Europe/Berlin"},
        )
        for schedule in (healthy, broken):
            await h.set_next_fire(schedule.id, T0)
        async with h.database.engine.begin() as connection:
            await connection.execute(
                update(Schedule).where(Schedule.id == broken.id).values({column: value})
            )
        dispatcher = h.dispatcher()
        reports = [
            await dispatcher.tick(T0 + timedelta(seconds=second, milliseconds=10))
            for second in (0, 1, 2, 61)
        ]
        healthy_runs = await h.runs_of(healthy.id)
        stored = await h.reload(broken.id)
    assert [len(report.fired) for report in reports] == [1, 0, 0, 1]
    assert [run.scheduled_for for run in healthy_runs] == [T0, T0 + timedelta(minutes=1)]
    assert [report.skipped for report in reports] == [
        [(broken.id, T0, "invalid_timing")],
        [],
        [],
        [(broken.id, T0, "invalid_timing")],
    ]
    assert stored.next_fire_at == T0  # left as it was, for a host that can read it
    logged = [line for line in logged_lines(capfd) if "schedule-invalid" in line]
    assert len(logged) == 2
    assert error in logged[0]


async def test_a_paused_schedule_moves_on_without_misses_after_downtime(
    make_settings: Callable[..., Settings],
) -> None:
    """Scheduler away for three minutes while a schedule was paused: nothing was due to
    run, so nothing is missed (no JobsScheduleMissed alert); its next fire moves on."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "cron", "cron": "* * * * *"},
        )
        await h.service.update(schedule.id, SchedulePatch(enabled=False, paused_note="on hold"))
        await h.set_next_fire(schedule.id, T0)
        report = await h.dispatcher().tick(T0 + timedelta(minutes=3, milliseconds=10))
        stored = await h.reload(schedule.id)
        runs = await h.runs_of(schedule.id)
    assert report.missed == 0
    assert report.fired == []
    assert report.skipped == [(schedule.id, T0 + timedelta(minutes=3), "paused")]
    assert stored.next_fire_at == T0 + timedelta(minutes=4)
    assert runs == []


async def test_a_released_buffered_fire_is_left_to_the_replica_sending_it(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A buffered fire waited minutes; the replica that starts it is still sending when
    another replica ticks. The fire counts as claimed when it was taken, not when it
    was buffered, so the other replica's outbox does not send the same run again."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "cron", "cron": "* * * * *"},  # no other fire before T0+60s
            overlap="buffer_one",
        )
        await h.set_next_fire(schedule.id, T0)
        await h.add_active_run(schedule.id, "d" * 32, T0 - timedelta(seconds=30))
        starter, other = h.dispatcher("replica-1"), h.dispatcher("replica-2")
        await starter.tick(T0 + timedelta(milliseconds=10))
        await h.finish_run("d" * 32, T0 + timedelta(seconds=20))
        released_at = T0 + timedelta(seconds=21)
        sent: list[str] = []
        real_send = JobsClient.send

        async def send_while_the_other_ticks(
            client: JobsClient, requests: Sequence[RunRequest], wire: Any = None
        ) -> None:
            sent.extend(request.run_id for request in requests)
            if len(sent) == 1:
                await other.tick(released_at + timedelta(milliseconds=5))
            await real_send(client, requests, wire)

        monkeypatch.setattr(JobsClient, "send", send_while_the_other_ticks)
        released = await starter.tick(released_at)
        runs = await h.runs_of(schedule.id)
    assert [at for _, at, _ in released.fired] == [T0]
    assert len(sent) == 1
    assert [run.run_id for run in runs] == ["d" * 32, *sent]


async def test_a_pause_committed_during_a_tick_is_respected(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's pause was acknowledged before the tick claimed the fire: no run."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            task="count_items", kwargs={"items": []}, schedule={"type": "interval", "seconds": 60}
        )
        await h.set_next_fire(schedule.id, T0)

        async def pause() -> None:
            await h.service.update(schedule.id, SchedulePatch(enabled=False))

        monkeypatch.setattr(schedules_repo, "due_schedules", committing_after_the_read(pause))
        report = await h.dispatcher().tick(T0 + timedelta(milliseconds=10))
        runs = await h.runs_of(schedule.id)
        fires = await h.fires_of(schedule.id)
        stored = await h.reload(schedule.id)
    assert report.fired == []
    assert runs == []
    assert fires == []
    assert stored.enabled is False


async def test_a_delete_committed_during_a_tick_leaves_the_other_fires_alone(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schedule deleted between the tick's read and its claims is not claimed (its
    claim would break the foreign key and with it the whole tick); the others fire."""
    async with harness(make_settings()) as h:
        doomed, healthy = [
            await h.create(
                task="count_items",
                kwargs={"items": []},
                schedule={"type": "interval", "seconds": 60},
            )
            for _ in range(2)
        ]
        for schedule in (doomed, healthy):
            await h.set_next_fire(schedule.id, T0)

        async def delete() -> None:
            await h.service.delete(doomed.id)

        monkeypatch.setattr(schedules_repo, "due_schedules", committing_after_the_read(delete))
        report = await h.dispatcher().tick(T0 + timedelta(milliseconds=10))
        runs = await h.runs_of(healthy.id)
    assert [(sid, at) for sid, at, _ in report.fired] == [(healthy.id, T0)]
    assert [run.scheduled_for for run in runs] == [T0]
