"""A database that is there but not serving (starting up, shutting down, out of
connection slots) is answered as one that is down: 503 problem+json with Retry-After,
so callers retry. So is one that refuses this deployment (credentials, no such
database): an operator's fix, after which the retry succeeds."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from jobs_service.broker import broker
from jobs_service.core.settings import Settings
from jobs_service.gateway import create_app
from tests.conftest import serve_app
from tests.support.refusing_postgres import RefusingPostgres
from tests.support.services import admin_database_url
from tests.unit.gateway.test_webhooks_api import SOURCES, standard

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

pytestmark = pytest.mark.anyio


def _settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        database={"connect_timeout_s": 2},
        redis_url="redis://127.0.0.1:6379/0",
        redis_prefix=f"jobs-test-unavailable-{uuid.uuid4().hex[:6]}",
        webhooks={"sources": SOURCES},
    )


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"
    assert response.json()["type"] == "urn:jobs-service:problem:database-unavailable"


@pytest.mark.parametrize(
    ("sqlstate", "message"),
    [
        ("57P03", "the database system is starting up"),
        ("57P01", "terminating connection due to administrator command"),
        ("57P02", "terminating connection due to crash of another server process"),
        ("53300", "sorry, too many clients already"),
        ("08006", "connection failure"),
        ("08P01", "no more connections allowed (max_client_conn)"),  # PgBouncer's
    ],
)
async def test_a_database_not_serving_is_503(sqlstate: str, message: str) -> None:
    """Reads and webhook deliveries alike: the server answered, refusing for now."""
    async with RefusingPostgres(sqlstate, message) as server:
        app = create_app(_settings(server.url), broker=broker)
        body = json.dumps({"type": "invoice.paid"}).encode()
        async with serve_app(app) as client:
            read = await client.get("/v1/runs")
            delivery = await client.post(
                "/webhooks/billing", content=body, headers=standard(body, f"msg_{sqlstate}")
            )
    assert server.refused >= 2  # both reached the server, which refused them
    _assert_unavailable(read)
    _assert_unavailable(delivery)


@pytest.mark.parametrize(
    ("sqlstate", "message"),
    [
        ("28P01", 'password authentication failed for user "jobs"'),
        ("3D000", 'database "jobs" does not exist'),
    ],
)
async def test_a_database_refusing_this_deployment_is_503_and_logs_why(
    sqlstate: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Credentials rotated on one side only, or a database not created: nothing can be
    served until an operator fixes it, and a retry then succeeds. A 503 as for a
    database that is down (the readiness check says not ready too), with the server's
    reason in the log line, where it was a 500 internal-error, read as a bug."""
    async with RefusingPostgres(sqlstate, message) as pg:
        app = create_app(_settings(pg.url), broker=broker)
        async with serve_app(app) as client:
            response = await client.get("/v1/runs")
    assert pg.refused >= 1
    _assert_unavailable(response)
    [line] = [
        json.loads(line)
        for line in capsys.readouterr().err.splitlines()
        if '"database-unavailable"' in line
    ]
    assert message in line["reason"]


@pytest.fixture
async def role_without_connections(pg_url: str) -> AsyncIterator[str]:
    """The test database's URL as a role whose connection limit is 0 (PostgreSQL
    answers its every connection "too many connections for role", SQLSTATE 53300)."""
    role = f"jobs_no_slots_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(
        make_url(admin_database_url()).set(drivername="postgresql").render_as_string(False)
    )
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
        yield make_url(pg_url).set(username=role, password=None).render_as_string(False)
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_a_role_out_of_connection_slots_is_503(role_without_connections: str) -> None:
    """The real PostgreSQL refusing a connection for the role's connection limit."""
    app = create_app(_settings(role_without_connections), broker=broker)
    async with serve_app(app) as client:
        response = await client.get("/v1/runs")
    _assert_unavailable(response)


async def test_a_request_that_finds_no_free_connection_is_503(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every connection of the gateway's pool busy for `database.pool_timeout_s`: the
    request is answered 503 database-unavailable with Retry-After (it was a 500, read as
    a bug), the log says why, and the next request, once one is free, is served."""
    settings = Settings(
        database_url=pg_url,
        database={"pool_size": 1, "max_overflow": 0, "pool_timeout_s": 0.3},
        redis_url="redis://127.0.0.1:6379/0",
        redis_prefix=f"jobs-test-pool-{uuid.uuid4().hex[:6]}",
    )
    app = create_app(settings, broker=broker)
    async with serve_app(app) as client:
        engine = app.state.runtime.database.engine
        async with engine.connect() as held:  # the pool's only connection
            await held.exec_driver_sql("SELECT 1")
            busy = await client.get("/v1/runs")
        served = await client.get("/v1/runs")
    _assert_unavailable(busy)
    assert served.status_code == 200, served.text
    [line] = [
        json.loads(line)
        for line in capsys.readouterr().err.splitlines()
        if '"database-unavailable"' in line
    ]
    assert "QueuePool limit" in line["reason"]
