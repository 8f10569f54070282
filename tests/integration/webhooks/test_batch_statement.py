"""How a batch of webhook events is written: on PostgreSQL one statement (events and
runs, its own transaction) with ids taken ahead from the table's sequence; on SQLite a
transaction. Either way an event whose run cannot be built is stored ``failed``."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

from jobs_service.core.settings import DatabaseSettings, Settings
from jobs_service.gateway import create_app
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import JobRun, WebhookEvent
from jobs_service.webhooks.event_ids import EventIdPool
from tests.conftest import serve_app
from tests.integration.webhooks.test_ingestion import _redis_broker
from tests.unit.gateway.test_webhooks_api import SOURCES, standard

if TYPE_CHECKING:
    from fastapi import FastAPI

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/0"


def _settings(database_url: str) -> Settings:
    billing = {**SOURCES["billing"], "routes": {"invoice.paid": "record_webhook"}}
    # A task that takes no event id: its runs cannot be built.
    billing["routes"]["invoice.voided"] = "return_garbage"
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_prefix=f"batch-{uuid.uuid4().hex[:8]}",
        webhooks={"sources": {"billing": billing}},
    )


def _delivery(msg_id: str, event_type: str = "invoice.paid") -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": event_type, "id": msg_id}).encode()
    return body, standard(body, msg_id)


async def _rows(app: FastAPI, external_ids: list[str]) -> dict[str, Any]:
    """``external_id → (event row, its run row or None)``."""
    async with app.state.runtime.database.sessions() as session:
        events = (
            await session.scalars(
                select(WebhookEvent).where(WebhookEvent.external_id.in_(external_ids))
            )
        ).all()
        runs = {
            run.run_id: run
            for run in (
                await session.scalars(
                    select(JobRun).where(JobRun.run_id.in_([e.run_id for e in events]))
                )
            ).all()
        }
    return {e.external_id: (e, runs.get(e.run_id or "")) for e in events}


@pytest.fixture(params=["postgresql", "sqlite"])
async def database_url(request: pytest.FixtureRequest, pg_url: str, sqlite_url: str) -> str:
    if request.param == "sqlite":
        database = Database(sqlite_url, DatabaseSettings())
        await migrate.upgrade(database)
        await database.close()
        return sqlite_url
    return pg_url


async def test_an_event_whose_run_cannot_be_built_is_stored_failed_beside_good_ones(
    database_url: str,
) -> None:
    """One batch with good events and one routed to a task that takes no event id: all
    answered ``accepted``; the good ones have a queued run with their event id, the bad
    one is stored ``failed`` with the validation error and has no run."""
    app = create_app(_settings(database_url), broker=_redis_broker(_settings(database_url)))
    tag = uuid.uuid4().hex[:8]
    good = [f"good-{tag}-{n}" for n in range(5)]
    bad = f"bad-{tag}"
    async with serve_app(app) as client:
        deliveries = [_delivery(m) for m in good] + [_delivery(bad, "invoice.voided")]
        responses = await asyncio.gather(
            *[client.post("/webhooks/billing", content=b, headers=h) for b, h in deliveries]
        )
        rows = await _rows(app, [*good, bad])
    assert [r.status_code for r in responses] == [202] * 6
    assert {r.json()["status"] for r in responses} == {"accepted"}
    for msg_id, response in zip([*good, bad], responses, strict=True):
        assert rows[msg_id][0].id == response.json()["event_id"]
    for msg_id in good:
        stored, run = rows[msg_id]
        assert stored.status in ("accepted", "enqueued")
        assert run is not None
        assert (run.status, run.kwargs, run.webhook_event_id) == (
            "queued",
            {"event_id": stored.id},
            stored.id,
        )
    failed, no_run = rows[bad]
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error["type"] == "InvalidKwargsError"
    assert no_run is None


async def test_a_batch_is_one_statement_on_postgresql(pg_url: str) -> None:
    """Thirty concurrent deliveries, one of them a duplicate of an earlier event: the
    events and their runs are written by one statement (sent on the driver's
    connection), then the duplicate's id is looked up (through SQLAlchemy); no other
    statement touches the tables on the request path."""
    settings = _settings(pg_url)
    app = create_app(settings, broker=_redis_broker(settings))
    tag = uuid.uuid4().hex[:8]
    fresh = [f"one-{tag}-{n}" for n in range(29)]
    seen_before = f"seen-{tag}"
    sent: dict[str, list[str]] = {"driver": [], "sqlalchemy": []}
    listening = False

    def note(path: str, query: str) -> None:
        if listening and ("webhook_events" in query or "job_runs" in query):
            sent[path].append(" ".join(query.split())[:60])

    def log_driver_queries(dbapi_connection: object, record: Any) -> None:
        record.driver_connection.add_query_logger(lambda logged: note("driver", logged.query))

    def log_sqlalchemy_queries(*args: Any) -> None:
        note("sqlalchemy", str(args[2]))

    # Every pool's and engine's (the app's engine is made at start-up), for this test.
    event.listen(Pool, "connect", log_driver_queries)
    event.listen(Engine, "before_cursor_execute", log_sqlalchemy_queries)
    try:
        async with serve_app(app) as client:
            first = await client.post(
                "/webhooks/billing",
                content=_delivery(seen_before)[0],
                headers=_delivery(seen_before)[1],
            )
            await asyncio.sleep(0.05)  # the driver calls its query loggers soon after
            listening = True
            inbox = app.state.webhook_inbox
            source = settings.webhooks.sources["billing"]
            from jobs_service.webhooks.events import IncomingEvent  # noqa: PLC0415

            answers = await asyncio.gather(
                *[
                    inbox.accept(
                        "billing",
                        source,
                        [IncomingEvent(external_id=m, event_type="invoice.paid", body="{}")],
                        {},
                    )
                    for m in [*fresh, seen_before]
                ]
            )
            await asyncio.sleep(0.05)
            listening = False
            rows = await _rows(app, fresh)
    finally:
        event.remove(Pool, "connect", log_driver_queries)
        event.remove(Engine, "before_cursor_execute", log_sqlalchemy_queries)
    writes = [s for s in sent["driver"] if "nextval" not in s]
    assert len(writes) == 1
    assert writes[0].startswith("WITH new_events AS ( INSERT INTO webhook_events")
    # The lookup of the duplicate; the marks of sent runs are off the request path.
    on_request_path = [s for s in sent["sqlalchemy"] if not s.startswith("UPDATE")]
    assert [s.split()[0] for s in on_request_path] == ["SELECT"]
    assert [a[0].status for a in answers] == ["accepted"] * 29 + ["duplicate"]
    assert answers[-1][0].event_id == first.json()["event_id"]
    assert all(run is not None and run.status == "queued" for _, run in rows.values())


async def test_the_id_pool_hands_out_each_id_once_and_sizes_blocks_to_demand(
    pg_url: str,
) -> None:
    """Concurrent takes get disjoint ids. A block that runs out doubles the next one (up
    to ``block``); a block older than its age limit is dropped and the next is sized to
    what was used of it, so a quiet gateway's ids follow on without gaps."""
    database = Database(pg_url, DatabaseSettings())
    concurrent = EventIdPool(block=100)
    pool = EventIdPool(block=100, max_age_s=0.5)
    first, second, third = (database.hold(autocommit=True) for _ in range(3))
    try:
        takes = await asyncio.gather(
            concurrent.take(first, 30), concurrent.take(second, 30), concurrent.take(third, 5)
        )
        held = []
        for _ in range(8):
            await pool.take(first, 10)
            held.append(pool.available)
        quiet = []
        for _ in range(3):
            await asyncio.sleep(0.6)
            quiet.append(await pool.take(first, 3))
    finally:
        await database.close()
    everything = [id_ for ids in takes for id_ in ids]
    assert [len(ids) for ids in takes] == [30, 30, 5]
    assert len(set(everything)) == 65
    # Blocks of 10, 20, 40 and 80: each twice what the one before gave out.
    assert held == [0, 10, 0, 30, 20, 10, 0, 70]
    # After a pause the old block's 70 are dropped and the next holds 10 (what the old
    # one gave out); after the next pause 3, and from then on no id is skipped.
    assert min(quiet[0]) > max(everything)
    assert [ids[1] - ids[0] for ids in quiet] == [1, 1, 1]
    assert quiet[1][0] == quiet[0][-1] + 8  # the 7 left of the block of 10
    assert quiet[2][0] == quiet[1][-1] + 1
