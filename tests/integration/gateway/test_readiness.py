"""/ready reports a down dependency as 503 problem+json."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from jobs_service.broker import broker, build_broker
from jobs_service.gateway import create_app
from tests.conftest import serve_app
from tests.support.processes import free_port

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio


async def test_ready_is_503_when_postgresql_is_unreachable(
    make_settings: Callable[..., Settings],
) -> None:
    """Pointing the settings at a closed port makes the database check fail."""
    closed = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/jobs"
    settings = make_settings(database_url=closed, database={"connect_timeout_s": 1})
    app = create_app(settings, broker=broker)
    async with serve_app(app) as client:
        response = await client.get("/ready")
        health = await client.get("/health")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["broker"]["ok"] is True
    assert "database" in body["detail"]
    assert health.status_code == 200


async def test_gateway_starts_with_redis_down_and_reports_it(
    make_settings: Callable[..., Settings],
    pg_url: str,
) -> None:
    """Redis unreachable at boot: the gateway serves, /ready is 503, submits are 503."""
    settings = make_settings(database_url=pg_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    redis_broker = build_broker(settings)
    redis_broker.register_task(_noop, "noop_for_readiness")
    app = create_app(settings, broker=redis_broker)
    async with serve_app(app) as client:
        ready = await client.get("/ready")
        submit = await client.post("/v1/tasks/noop_for_readiness", json={})
    assert ready.status_code == 503
    assert ready.json()["checks"]["broker"]["ok"] is False
    assert ready.json()["checks"]["database"]["ok"] is True
    assert submit.status_code == 503
    assert submit.json()["type"].endswith("broker-unavailable")
    assert submit.headers["retry-after"] == "5"


async def _noop() -> dict[str, int]:
    """Do nothing."""
    return {"errors": 0}
