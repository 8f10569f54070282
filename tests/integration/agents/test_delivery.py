"""ResultDelivery against a real Teams Workflows fake: claims, failures, cancellation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg
import httpx
import pytest
from sqlalchemy import select

from jobs_service.agents import delivery as delivery_module
from jobs_service.agents.delivery import TEAMS_CONTENT_BYTES, ResultDelivery, RunResult
from jobs_service.agents.teams import TeamsWorkflows
from jobs_service.core.delivery import DeliverTo
from jobs_service.core.errors import ConfigurationError, PermanentError, RetryLater
from jobs_service.core.settings import ChannelSettings, DatabaseSettings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import Delivery
from tests.support.fakes.server import serve
from tests.support.fakes.teams import FakeTeamsWorkflows

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio


def _no_graph() -> object:
    raise AssertionError("Teams-only deliveries must not build the Graph agent")


@pytest.fixture
async def database(make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    settings = make_settings()
    database = Database(settings.database_url, settings.database)
    await migrate.upgrade(database)
    yield database
    await database.close()


async def _rows(database: Database) -> list[tuple[str, str, int]]:
    async with database.sessions() as session:
        rows = (await session.execute(select(Delivery).order_by(Delivery.id))).scalars()
        return [(row.target, row.status, row.attempts) for row in rows]


async def test_a_send_cut_off_mid_flight_is_released_for_the_retry(database: Database) -> None:
    teams = FakeTeamsWorkflows(delay_s=1.0)
    with serve(teams.app) as base:
        channels = ChannelSettings.model_validate(
            {"teams": {"sales": {"webhook_url": teams.url(base, "sales")}}}
        )
        async with httpx.AsyncClient() as http:
            delivery = ResultDelivery(database, channels, TeamsWorkflows(http), _no_graph)  # type: ignore[arg-type]
            result = RunResult("run-1", "report", {"errors": 0}, "hello")
            targets = DeliverTo(teams_channel="sales")
            with anyio.move_on_after(0.2):  # the task's timeout fires mid-send
                await delivery.deliver(result, targets)
            await anyio.sleep(0.1)
            released = await _rows(database)
            teams.delay_s = 0
            report = await delivery.deliver(result, targets)
            again = await delivery.deliver(result, targets)
    assert released == [("sales", "failed", 1)]
    assert (report.sent, report.already_sent) == (1, 0)
    assert (again.sent, again.already_sent) == (0, 1)
    assert await _rows(database) == [("sales", "sent", 2)]


async def test_a_failed_channel_does_not_stop_the_others(database: Database) -> None:
    teams = FakeTeamsWorkflows(failures=[503])
    with serve(teams.app) as base:
        channels = ChannelSettings.model_validate(
            {
                "teams": {
                    "sales": {"webhook_url": teams.url(base, "sales")},
                    "ops": {"webhook_url": teams.url(base, "ops")},
                }
            }
        )
        async with httpx.AsyncClient() as http:
            delivery = ResultDelivery(database, channels, TeamsWorkflows(http), _no_graph)  # type: ignore[arg-type]
            result = RunResult("run-2", "report", {"errors": 0})
            with pytest.raises(
                RetryLater, match="teams sales: Teams Workflows webhook answered HTTP 503"
            ):
                await delivery.deliver(result, DeliverTo(teams_channel="sales"))
            await delivery.deliver(result, DeliverTo(teams_channel="ops"))
            with pytest.raises(ConfigurationError, match=r"no \[channels.teams.gone\]"):
                await delivery.deliver(result, DeliverTo(teams_channel="gone"))
    assert await _rows(database) == [
        ("sales", "failed", 1),
        ("ops", "sent", 1),
        ("gone", "failed", 1),
    ]
    assert len(teams.cards("ops")) == 1
    assert "sig=" not in str(await _rows(database))


async def test_a_destination_failing_in_an_unexpected_way_is_recorded_not_raised(
    database: Database,
) -> None:
    """An error no agent maps (here httpx's InvalidURL for a malformed webhook URL)
    used to escape the loop: the rest of the destinations were skipped and the run
    retried into the same error. It is now this destination's permanent failure."""
    channels = ChannelSettings.model_validate(
        {"teams": {"broken": {"webhook_url": "https://[::1/workflows/x?sig=s3cr3t"}}}
    )
    async with httpx.AsyncClient() as http:
        delivery = ResultDelivery(database, channels, TeamsWorkflows(http), _no_graph)  # type: ignore[arg-type]
        result = RunResult("run-3", "report", {"errors": 0})
        with pytest.raises(PermanentError, match="teams broken: InvalidURL"):
            await delivery.deliver(result, DeliverTo(teams_channel="broken"))
    assert await _rows(database) == [("broken", "failed", 1)]


async def test_a_timeout_after_the_send_still_records_it_sent(empty_pg_url: str) -> None:
    """The provider took the card; the task's timeout fires while the database is slow
    to record that. The record still lands, so a retry does not post the card again."""
    database = Database(empty_pg_url, DatabaseSettings())
    await migrate.upgrade(database)
    locker = await asyncpg.connect(empty_pg_url.replace("postgresql+asyncpg", "postgresql"))
    teams = FakeTeamsWorkflows(delay_s=0.4)
    try:
        with serve(teams.app) as base:
            channels = ChannelSettings.model_validate(
                {"teams": {"sales": {"webhook_url": teams.url(base, "sales")}}}
            )
            async with httpx.AsyncClient() as http:
                delivery = ResultDelivery(database, channels, TeamsWorkflows(http), _no_graph)  # type: ignore[arg-type]
                result = RunResult("run-4", "report", {"errors": 0})
                targets = DeliverTo(teams_channel="sales")
                lock = locker.transaction()
                async with anyio.create_task_group() as group:

                    async def deliver_with_timeout() -> None:
                        with anyio.move_on_after(0.7):  # the send ends at 0.4 s
                            await delivery.deliver(result, targets)

                    group.start_soon(deliver_with_timeout)
                    await anyio.sleep(0.2)  # claimed, sending: now the database stalls
                    await lock.start()
                    await locker.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
                    await anyio.sleep(0.8)  # the timeout fired while the record waited
                    await lock.rollback()
                await anyio.sleep(0.3)
                rows = await _rows(database)
                again = await delivery.deliver(result, targets)
    finally:
        await locker.close()
        await database.close()
    assert rows == [("sales", "sent", 1)]
    assert (again.sent, again.already_sent) == (0, 1)
    assert len(teams.cards("sales")) == 1


async def test_a_result_too_long_for_teams_is_cut_and_says_so(database: Database) -> None:
    """Teams refuses a message over about 28 KB: a long report was a permanent failure
    after the domain's work was done. The card carries the first 16 KB and a note."""
    teams = FakeTeamsWorkflows()
    with serve(teams.app) as base:
        channels = ChannelSettings.model_validate(
            {"teams": {"sales": {"webhook_url": teams.url(base, "sales")}}}
        )
        async with httpx.AsyncClient() as http:
            delivery = ResultDelivery(database, channels, TeamsWorkflows(http), _no_graph)  # type: ignore[arg-type]
            content = "é" * 40_000  # 80,000 bytes: a cut must not split a character
            await delivery.deliver(
                RunResult("run-5", "report", {"errors": 0}, content),
                DeliverTo(teams_channel="sales"),
            )
    [card] = teams.cards("sales")
    text = card["body"][1]["text"]
    assert text.startswith("é" * 8_000)
    assert len(text.split("\n\n")[0].encode()) <= TEAMS_CONTENT_BYTES
    assert text.endswith("the whole result is on run run-5)*")


def _clock_off_by(monkeypatch: pytest.MonkeyPatch, skew: timedelta) -> None:
    """The delivering process's wall clock is ``skew`` off the database's (and this
    test's): a worker on another machine, or one whose clock stepped."""

    class _Skewed(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Any:
            return datetime.now(tz) + skew

    monkeypatch.setattr(delivery_module, "datetime", _Skewed)


async def _run_rows(database: Database, run_id: str) -> list[tuple[str, str, int]]:
    async with database.sessions() as session:
        query = select(Delivery).where(Delivery.run_id == run_id).order_by(Delivery.id)
        return [(row.target, row.status, row.attempts) for row in (await session.scalars(query))]


@pytest.mark.parametrize("skew_min", [10, -10])
async def test_a_send_in_flight_is_not_taken_over_whatever_the_other_workers_clock(
    any_database: Database, monkeypatch: pytest.MonkeyPatch, skew_min: int
) -> None:
    """Attempt A is posting the card; attempt B runs on a worker whose clock is ten
    minutes off. The claim's age was taken against each worker's clock: B, ahead, found
    A's live claim stale and posted the card a second time; B, behind, was told to come
    back in fifteen minutes instead of five. The database's clock decides both now."""
    teams = FakeTeamsWorkflows(delay_s=1.0)
    run_id = f"run-skew-{uuid.uuid4().hex[:8]}"
    with serve(teams.app) as base:
        channels = ChannelSettings.model_validate(
            {"teams": {"sales": {"webhook_url": teams.url(base, "sales")}}}
        )
        async with httpx.AsyncClient() as http:
            a = ResultDelivery(any_database, channels, TeamsWorkflows(http), _no_graph)  # type: ignore[arg-type]
            b = ResultDelivery(any_database, channels, TeamsWorkflows(http), _no_graph)  # type: ignore[arg-type]
            result = RunResult(run_id, "report", {"errors": 0}, "hello")
            targets = DeliverTo(teams_channel="sales")
            async with anyio.create_task_group() as group:
                group.start_soon(a.deliver, result, targets)
                for _ in range(200):  # until A has claimed the message and is posting it
                    if await _run_rows(any_database, run_id) == [("sales", "sending", 1)]:
                        break
                    await anyio.sleep(0.02)
                with monkeypatch.context() as patch:
                    _clock_off_by(patch, timedelta(minutes=skew_min))
                    try:
                        outcome: object = await b.deliver(result, targets)
                    except RetryLater as exc:
                        outcome = exc
    assert len(teams.cards("sales")) == 1
    assert await _run_rows(any_database, run_id) == [("sales", "sent", 1)]
    assert isinstance(outcome, RetryLater)
    assert "being delivered by another attempt" in str(outcome)
    assert outcome.retry_after is not None
    assert 295 < outcome.retry_after <= 301  # the rest of A's five minutes, plus one


async def test_a_claim_older_than_the_window_by_the_databases_clock_is_taken_over(
    any_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt died mid-send six minutes ago (by the database's clock, which this
    test shares): the next attempt takes the message over and sends it, even on a
    worker whose clock is ten minutes behind, which judged the claim four minutes old."""
    run_id = f"run-dead-{uuid.uuid4().hex[:8]}"
    died_at = datetime.now(UTC) - timedelta(minutes=6)
    async with any_database.sessions() as session, session.begin():
        session.add(
            Delivery(
                run_id=run_id,
                channel="teams",
                target="sales",
                status="sending",
                idempotency_key="k",
                attempts=1,
                created_at=died_at,
                updated_at=died_at,
            )
        )
    teams = FakeTeamsWorkflows()
    _clock_off_by(monkeypatch, timedelta(minutes=-10))
    with serve(teams.app) as base:
        channels = ChannelSettings.model_validate(
            {"teams": {"sales": {"webhook_url": teams.url(base, "sales")}}}
        )
        async with httpx.AsyncClient() as http:
            delivery = ResultDelivery(any_database, channels, TeamsWorkflows(http), _no_graph)  # type: ignore[arg-type]
            report = await delivery.deliver(
                RunResult(run_id, "report", {"errors": 0}), DeliverTo(teams_channel="sales")
            )
    assert (report.sent, report.already_sent) == (1, 0)
    assert len(teams.cards("sales")) == 1
    assert await _run_rows(any_database, run_id) == [("sales", "sent", 2)]
