"""/ready reports a down dependency as 503 problem+json."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis

from jobs_service.broker import broker, build_broker
from jobs_service.core.settings import DatabaseSettings
from jobs_service.gateway import create_app
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from tests.conftest import serve_app
from tests.support.processes import free_port
from tests.support.redis_server import PrivateRedis

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

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


async def test_ready_is_503_once_the_schema_is_behind_or_gone(
    make_settings: Callable[..., Settings], migrated_pg_url: str
) -> None:
    """The gateway started on this release's schema; the database is then taken back a
    revision (a backup from before the last migration restored), then emptied: /ready
    turns 503 naming what to run, rather than the gateway answering 500 to every read."""
    head = migrate.head_revision()
    app = create_app(make_settings(database_url=migrated_pg_url), broker=broker)
    database = Database(migrated_pg_url, DatabaseSettings())
    try:
        async with serve_app(app) as client:
            current = await client.get("/ready")
            await migrate.downgrade(database, "-1")
            previous = await migrate.current_revision(database)
            behind = await client.get("/ready")
            await migrate.downgrade(database, "base")
            gone = await client.get("/ready")
    finally:
        await database.close()
    assert current.status_code == 200
    assert current.json()["checks"]["database"]["detail"] == f"postgresql, revision {head}"
    assert behind.status_code == 503
    assert behind.json()["detail"] == (
        f"database: the database is at an older revision ({previous}) than this release "
        f"({head}): run `jobsctl migrate`"
    )
    assert behind.json()["checks"]["broker"]["ok"] is True
    assert gone.status_code == 503
    assert gone.json()["checks"]["database"] == {
        "ok": False,
        "latency_ms": gone.json()["checks"]["database"]["latency_ms"],
        "detail": "the database has no Jobs Service tables yet: run `jobsctl migrate` first "
        "(`jobsctl run` migrates by itself)",
    }


async def test_ready_names_what_postgresql_refused_in_one_line(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    """The detail is the driver's message: no SQLAlchemy wrapper name, no "Background on
    this error" link."""
    missing = pg_url.rsplit("/", 1)[0] + "/no_such_database_here"
    app = create_app(make_settings(database_url=missing), broker=broker)
    async with serve_app(app) as client:
        response = await client.get("/ready")
    assert response.status_code == 503
    reason = 'InvalidCatalogNameError: database "no_such_database_here" does not exist'
    assert response.json()["checks"]["database"]["detail"] == reason
    assert response.json()["detail"] == f"database: {reason}"


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


async def test_a_batch_the_broker_refuses_midway_says_which_runs_were_queued(
    make_settings: Callable[..., Settings], tmp_path: Path, pg_url: str
) -> None:
    """Redis runs out of memory after the first chunk: the answer lists the queued runs
    and carries no Retry-After, since resending the whole batch would queue them twice.
    An Idempotency-Key, which a batch cannot honour, is refused rather than ignored."""
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        settings = make_settings(database_url=pg_url, redis_url=server.url, redis_prefix="part")
        redis_broker = build_broker(settings)
        redis_broker.register_task(_echo, "echo_text")
        app = create_app(settings, broker=redis_broker)
        async with serve_app(app) as client:
            async with Redis.from_url(server.url) as redis:
                used = int((await redis.info("memory"))["used_memory"])
                await redis.config_set("maxmemory", used + 200_000)
                await redis.config_set("maxmemory-policy", "noeviction")
            items = [{"kwargs": {"text": f"{n:04d}" + "x" * 800}} for n in range(1000)]
            refused = await client.post("/v1/tasks/echo_text/batch", json={"items": items})
            keyed = await client.post(
                "/v1/tasks/echo_text/batch",
                json={"items": items[:2]},
                headers={"Idempotency-Key": "batch-1"},
            )
    finally:
        server.stop()
    assert refused.status_code == 503
    body = refused.json()
    assert body["type"].endswith("batch-partly-queued")
    assert "retry-after" not in refused.headers
    assert 100 <= len(body["queued_run_ids"]) < 1000
    assert f"the first {len(body['queued_run_ids'])} runs" in body["detail"]
    assert keyed.status_code == 422
    assert "Idempotency-Key is not supported on batches" in keyed.json()["detail"]


async def _echo(text: str) -> None:
    del text
