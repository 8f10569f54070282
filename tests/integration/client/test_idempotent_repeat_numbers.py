"""A keyed repeat is compared with its first request as JSON, on both databases.

PostgreSQL's jsonb gives numbers back as it normalises them (``1e16`` as
``10000000000000000``, ``-0.0`` as ``0``): an identical repeat must still replay, and a
repeat whose arguments really differ must still be refused.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from jobs_service.broker import broker as shared
from jobs_service.broker import build_broker
from jobs_service.client import IdempotencyConflictError, JobsClient
from jobs_service.core.settings import Settings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.tasks.registry import list_tasks
from tests.support.services import redis_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["postgresql", "sqlite"])
async def client(
    request: pytest.FixtureRequest, pg_url: str, sqlite_url: str, redis_prefix: str
) -> AsyncIterator[JobsClient]:
    """A client on Redis and, in turn, PostgreSQL and SQLite."""
    settings = Settings(
        database_url=pg_url if request.param == "postgresql" else sqlite_url,
        redis_url=redis_url(),
        redis_prefix=f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
    )
    broker = build_broker(settings)
    for info in list_tasks(shared):
        broker.register_task(info.task.original_func, info.name, **info.task.labels)
    runtime = Runtime(settings)
    if request.param == "sqlite":
        await migrate.upgrade(runtime.database)
    broker.state.runtime = runtime
    await broker.startup()
    yield JobsClient(broker, runtime)
    await broker.shutdown()
    await runtime.stop()


@pytest.mark.parametrize(
    ("task", "kwargs"),
    [
        ("sleep_for", {"seconds": -0.0}),
        ("run_agent_task", {"agent": "crm/score", "payload": {"amount": 1e16}}),
        ("run_agent_task", {"agent": "crm/score", "payload": {"amount": 10**16}}),
        ("run_agent_task", {"agent": "crm/score", "payload": {"delta": -0.0}}),
        (
            "run_agent_task",
            {"agent": "crm/score", "payload": {"big": [1.2345678901234568e16, -2e17, 0.1]}},
        ),
    ],
)
async def test_an_identical_repeat_replays_whatever_the_numbers(
    client: JobsClient, task: str, kwargs: dict[str, Any]
) -> None:
    """The same request sent twice with its key replays the first run."""
    key = f"numbers-{uuid.uuid4().hex}"
    first = await client.submit(task, kwargs, idempotency_key=key)
    repeat = await client.submit(task, kwargs, idempotency_key=key)
    assert repeat.replayed
    assert repeat.run_id == first.run_id


@pytest.mark.parametrize(
    ("first", "repeat"),
    [
        (1, 1.5),
        ("1", 1),
        (True, 1),
        (False, 0),
        (None, 0),
        ([1, 2], [2, 1]),
        ({"a": 1}, {"a": 1, "b": 1}),
    ],
)
async def test_a_repeat_with_other_values_is_refused(
    client: JobsClient, first: Any, repeat: Any
) -> None:
    """Values JSON tells apart stay apart: the repeat is a conflict, not a replay."""
    key = f"numbers-{uuid.uuid4().hex}"
    await client.submit(
        "run_agent_task", {"agent": "crm/score", "payload": {"x": first}}, idempotency_key=key
    )
    with pytest.raises(IdempotencyConflictError, match="kwargs"):
        await client.submit(
            "run_agent_task", {"agent": "crm/score", "payload": {"x": repeat}}, idempotency_key=key
        )
