"""A keyless submit while PostgreSQL does not answer its ``queued`` row.

The run is sent first and its row written after. A database that takes no writes (a
migration's table lock, a frozen server, a failover that black-holes connections) must
neither hold the caller, whose run is already in Redis, nor the process's later submits,
which share the writer's connection.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from jobs_service.client import JobsClient
from jobs_service.core.settings import Settings
from tests.integration.client.test_client import stream_length
from tests.support.clients import client_for
from tests.support.logs import logged_lines
from tests.support.services import redis_url
from tests.support.tcp_proxy import BlackHoleProxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

#: The writer's statement_timeout (``queued_runs.TIMEOUT_S``).
STATEMENT_TIMEOUT_S = 5.0


@pytest.fixture
async def production(pg_url: str, redis_prefix: str) -> AsyncIterator[tuple[JobsClient, Settings]]:
    """A client on the shared test database and Redis, with a prefix of its own."""
    settings = Settings(
        database_url=pg_url,
        redis_url=redis_url(),
        redis_prefix=f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
    )
    async with client_for(pg_url, redis_url(), settings.redis_prefix, settings=settings) as client:
        await client.broker.startup()
        yield client, settings


async def _waiting_inserts(database: asyncpg.Connection) -> int:
    """Statements of other sessions waiting for a lock to insert into job_runs."""
    return int(
        await database.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO job_runs%' AND datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    )


async def test_a_keyless_submit_is_answered_while_the_database_holds_its_row(
    production: tuple[JobsClient, Settings], pg_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Under a table lock the submit answers within claim_timeout_s (its run is queued,
    its row deferred); the writer's stuck statement is cancelled by the server instead
    of waiting for the lock, and once the lock is gone later submits are recorded at
    once."""
    client, settings = production
    await client.enqueue("count_items", {"items": ["warm-up"]})  # the writer's connection
    dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    blocker = await asyncpg.connect(dsn)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE job_runs IN SHARE MODE")  # no row can be inserted
        started = time.monotonic()
        stalled = await asyncio.wait_for(
            client.enqueue("count_items", {"items": ["during"]}),
            timeout=client.claim_timeout_s + 5,
        )
        answered_s = time.monotonic() - started
        sent = await stream_length(settings)
        await asyncio.sleep(STATEMENT_TIMEOUT_S + 1.5 - answered_s)
        waiting_after_timeout = await _waiting_inserts(blocker)
        await transaction.rollback()
        started = time.monotonic()
        later = await client.enqueue("count_items", {"items": ["after"]})
        later_s = time.monotonic() - started
        rows = {
            row["run_id"]: row["status"]
            for row in await blocker.fetch(
                "SELECT run_id, status FROM job_runs WHERE run_id = ANY($1::text[])",
                [stalled, later],
            )
        }
    finally:
        await blocker.close()
    assert client.claim_timeout_s - 0.5 <= answered_s <= client.claim_timeout_s + 1.5
    assert sent == 2  # the run was sent: it is queued, and its worker writes its row
    assert any("queued-row-deferred" in line and stalled in line for line in logged_lines(capfd))
    assert waiting_after_timeout == 0  # the server cancelled the writer's statement
    assert later_s < 1.0
    assert rows == {later: "queued"}  # the stalled row was never written behind the lock


async def test_a_writer_whose_connection_goes_silent_recovers_on_a_new_one(
    pg_url: str, redis_prefix: str
) -> None:
    """The writer's connection is black-holed (a failover that leaves it open and
    silent): the submit waiting on it answers within claim_timeout_s, the writer gives
    the connection up a little after its statement timeout, and its rows and those
    queued behind them are then written through a new connection."""
    proxy = BlackHoleProxy("127.0.0.1", make_url(pg_url).port or 5432)
    await proxy.start()
    through_proxy = make_url(pg_url).set(host="127.0.0.1", port=proxy.port)
    settings = Settings(
        database_url=through_proxy.render_as_string(hide_password=False),
        redis_url=redis_url(),
        redis_prefix=f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
    )
    prefix = settings.redis_prefix
    try:
        async with client_for(pg_url, redis_url(), prefix, settings=settings) as client:
            await client.broker.startup()
            await client.enqueue("count_items", {"items": ["warm-up"]})  # the writer's connection
            proxy.black_hole()
            started = time.monotonic()
            silenced = await asyncio.wait_for(
                client.enqueue("count_items", {"items": ["silenced"]}),
                timeout=client.claim_timeout_s + 5,
            )
            silenced_s = time.monotonic() - started
            started = time.monotonic()
            behind = await asyncio.wait_for(
                client.enqueue("count_items", {"items": ["behind"]}),
                timeout=client.claim_timeout_s + 5,
            )
            behind_s = time.monotonic() - started
            started = time.monotonic()
            later = await client.enqueue("count_items", {"items": ["later"]})
            later_s = time.monotonic() - started
            stored = {
                run_id: run.status if (run := await client.get_run(run_id)) else None
                for run_id in (silenced, behind, later)
            }
    finally:
        await proxy.stop()
    assert silenced_s <= client.claim_timeout_s + 1.5
    assert behind_s <= client.claim_timeout_s  # written once the writer moved on
    assert later_s < 1.0
    assert stored == {silenced: "queued", behind: "queued", later: "queued"}
