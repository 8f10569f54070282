"""A keyed repeat replays the first run only if it asks for the same thing: where the
result goes and what triggered the run count as much as the task and its kwargs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from jobs_service.broker import broker
from jobs_service.client import IdempotencyConflictError, JobsClient
from jobs_service.gateway import create_app
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

ALICE = {"deliver_to": {"email": ["alice@example.com"]}}
FIRE = datetime(2026, 1, 1, 9, tzinfo=UTC)


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[JobsClient]:
    """The embedded service's client (SQLite, in-memory broker)."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app):
        yield app.state.client


@pytest.mark.parametrize(
    ("first", "repeat", "difference"),
    [
        (ALICE, {"deliver_to": {"email": ["bob@example.com"]}}, "deliver_to"),
        (ALICE, {}, "deliver_to"),
        ({}, ALICE, "deliver_to"),
        (
            {"schedule_id": 1, "scheduled_for": FIRE},
            {"schedule_id": 2, "scheduled_for": FIRE},
            "schedule fire",
        ),
        ({"schedule_id": 1, "scheduled_for": FIRE}, {"schedule_id": 1}, "schedule fire"),
        ({"webhook_event_id": 7}, {"webhook_event_id": 8}, "webhook event"),
    ],
)
async def test_a_repeat_asking_for_something_else_is_a_conflict(
    client: JobsClient, first: dict[str, Any], repeat: dict[str, Any], difference: str
) -> None:
    """Another destination, schedule fire or webhook event: not the first run's request."""
    await client.submit("count_items", {"items": ["a"]}, idempotency_key="report-1", **first)
    with pytest.raises(IdempotencyConflictError, match=f"different {difference}"):
        await client.submit("count_items", {"items": ["a"]}, idempotency_key="report-1", **repeat)


async def test_a_repeat_asking_for_the_same_thing_replays(client: JobsClient) -> None:
    """The same destination, spelt as given or as stored, replays the first run."""
    first = await client.submit(
        "count_items", {"items": ["a"]}, idempotency_key="report-2", **ALICE
    )
    repeat = await client.submit(
        "count_items",
        {"items": ["a"]},
        idempotency_key="report-2",
        deliver_to={"email": {"to": ["alice@example.com"]}},
    )
    assert repeat.replayed
    assert repeat.run_id == first.run_id
