"""Each destination's delivery outcome is counted by channel, against a real Teams fake."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import httpx
import pytest
from prometheus_client import REGISTRY

from jobs_service.agents.delivery import ResultDelivery, RunResult
from jobs_service.agents.teams import TeamsWorkflows
from jobs_service.core.delivery import DeliverTo
from jobs_service.core.errors import RetryLater
from jobs_service.core.settings import ChannelSettings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from tests.support.fakes.server import serve
from tests.support.fakes.teams import FakeTeamsWorkflows

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio
OUTCOMES = ("sent", "already_sent", "failed", "interrupted")


def _no_graph() -> object:
    raise AssertionError("Teams-only deliveries must not build the Graph agent")


def _counts() -> dict[str, float]:
    return {
        outcome: REGISTRY.get_sample_value(
            "jobs_deliveries_total", {"channel": "teams", "outcome": outcome}
        )
        or 0.0
        for outcome in OUTCOMES
    }


@pytest.fixture
async def database(make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    settings = make_settings()
    database = Database(settings.database_url, settings.database)
    await migrate.upgrade(database)
    yield database
    await database.close()


async def test_every_delivery_outcome_is_counted_once(database: Database) -> None:
    """Cut off mid-send, then sent, then already sent; another run refused with 503."""
    before = _counts()
    teams = FakeTeamsWorkflows(delay_s=1.0)
    with serve(teams.app) as base:
        channels = ChannelSettings.model_validate(
            {"teams": {"sales": {"webhook_url": teams.url(base, "sales")}}}
        )
        async with httpx.AsyncClient() as http:
            delivery = ResultDelivery(database, channels, TeamsWorkflows(http), _no_graph)  # type: ignore[arg-type]
            result = RunResult("run-metrics-1", "report", {"errors": 0}, "hello")
            targets = DeliverTo(teams_channel="sales")
            with anyio.move_on_after(0.2):
                await delivery.deliver(result, targets)
            await anyio.sleep(0.1)
            teams.delay_s = 0
            await delivery.deliver(result, targets)
            await delivery.deliver(result, targets)
            teams.failures = [503]
            with pytest.raises(RetryLater):
                await delivery.deliver(RunResult("run-metrics-2", "report", {}), targets)
    after = _counts()
    assert {outcome: after[outcome] - before[outcome] for outcome in OUTCOMES} == {
        "sent": 1,
        "already_sent": 1,
        "failed": 1,
        "interrupted": 1,
    }
