"""Group-committed ingestion on the real PostgreSQL and Redis: concurrent requests share
transactions and sends, and still each get the right answer; failures lose nothing."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError

from jobs_service.broker import stream_names
from jobs_service.core.settings import Settings
from jobs_service.gateway import create_app
from jobs_service.gateway.problems import is_database_down
from jobs_service.infrastructure.models import JobRun, WebhookEvent
from jobs_service.webhooks.events import IncomingEvent
from tests.conftest import serve_app
from tests.integration.webhooks.test_ingestion import _redis_broker
from tests.support.redis_server import PrivateRedis
from tests.unit.gateway.test_webhooks_api import SOURCES, standard

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from fastapi import FastAPI

    from jobs_service.webhooks.inbox import Accepted

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/0"


def _settings(pg_url: str, redis_url: str = REDIS_URL, **webhooks: Any) -> Settings:
    return Settings(
        database_url=pg_url,
        redis_url=redis_url,
        redis_prefix=f"batches-{uuid.uuid4().hex[:8]}",
        webhooks={"sources": SOURCES, **webhooks},
    )


def _delivery(msg_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": "invoice.paid", "id": msg_id}).encode()
    return body, standard(body, msg_id)


def _billing_inbox(pg_url: str) -> tuple[FastAPI, Callable[[str], Awaitable[list[Accepted]]]]:
    """An app on PostgreSQL and Redis, and how to hand its inbox one ``billing`` event
    (by its id) the way the webhook route does."""
    settings = _settings(pg_url)
    app = create_app(settings, broker=_redis_broker(settings))
    source = settings.webhooks.sources["billing"]

    def accept(msg_id: str) -> Awaitable[list[Accepted]]:
        event = IncomingEvent(msg_id, "invoice.paid", json.dumps({"id": msg_id}))
        return app.state.webhook_inbox.accept("billing", source, [event], {})  # type: ignore[no-any-return]

    return app, accept


async def _stored(app: FastAPI, external_ids: list[str]) -> dict[str, tuple[int, str]]:
    """``external_id → (event id, status)`` of those stored."""
    async with app.state.runtime.database.sessions() as session:
        rows = await session.execute(
            select(WebhookEvent.external_id, WebhookEvent.id, WebhookEvent.status).where(
                WebhookEvent.external_id.in_(external_ids)
            )
        )
        return {external_id: (event_id, status) for external_id, event_id, status in rows}


async def _runs_of(app: FastAPI, event_ids: list[int]) -> int:
    async with app.state.runtime.database.sessions() as session:
        query = (
            select(func.count())
            .select_from(JobRun)
            .where(JobRun.webhook_event_id.in_(event_ids), JobRun.status == "queued")
        )
        return int((await session.execute(query)).scalar_one())


async def _queued_messages(settings: Settings, redis_url: str = REDIS_URL) -> int:
    async with Redis.from_url(redis_url) as redis:
        return int(await redis.xlen(stream_names(settings)["stream"]))


def _admin_dsn(pg_url: str) -> str:
    return make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)


#: What the poison trigger does to an event it catches.
_KILL_SESSION = "PERFORM pg_terminate_backend(pg_backend_pid());"
_REFUSE_DATA = "RAISE EXCEPTION 'refused value' USING ERRCODE = 'character_not_in_repertoire';"


@asynccontextmanager
async def _poisoned(pg_url: str, prefix: str, action: str = _KILL_SESSION) -> AsyncIterator[None]:
    """While inside: a transaction storing an event whose id starts with ``prefix`` loses
    its connection (the server ends the session mid-statement, as in a crash), or with
    ``_REFUSE_DATA`` is refused as bad data (as a value the column cannot hold is)."""
    name = f"poison_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_admin_dsn(pg_url))
    try:
        await admin.execute(
            f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.external_id LIKE '{prefix}%' THEN
                {action}
              END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER {name} BEFORE INSERT ON webhook_events
              FOR EACH ROW EXECUTE FUNCTION {name}();
            """
        )
        yield
    finally:
        await admin.execute(
            f"DROP TRIGGER IF EXISTS {name} ON webhook_events; DROP FUNCTION IF EXISTS {name}();"
        )
        await admin.close()


async def test_concurrent_deliveries_with_duplicates_among_them(pg_url: str) -> None:
    """Sixty requests at once, twenty events three times each: per event one accepted
    and two duplicates naming the same event id; twenty runs and twenty messages."""
    settings = _settings(pg_url)
    app = create_app(settings, broker=_redis_broker(settings))
    tag = uuid.uuid4().hex[:8]
    msg_ids = [f"dup-{tag}-{n}" for n in range(20)]
    async with serve_app(app) as client:
        sends = [(msg_id, *_delivery(msg_id)) for msg_id in msg_ids for _ in range(3)]
        responses = await asyncio.gather(
            *[
                client.post("/webhooks/billing", content=body, headers=headers)
                for _, body, headers in sends
            ]
        )
        stored = await _stored(app, msg_ids)
        runs = await _runs_of(app, [event_id for event_id, _ in stored.values()])
        queued = await _queued_messages(app.state.settings)
    answers: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for (msg_id, _, _), response in zip(sends, responses, strict=True):
        assert response.status_code == 202, response.text
        answers[msg_id].append((response.json()["event_id"], response.json()["status"]))
    for msg_id, got in answers.items():
        assert sorted(status for _, status in got) == ["accepted", "duplicate", "duplicate"]
        assert {event_id for event_id, _ in got} == {stored[msg_id][0]}
    assert len(stored) == 20
    assert runs == 20
    assert queued == 20


async def test_a_database_failure_fails_the_whole_batch_and_stores_none_of_it(
    pg_url: str,
) -> None:
    """Five good events and one whose insert kills the connection, written as one batch:
    all six fail with a database-down error; none is stored, so each good one is
    accepted (not a duplicate) when its sender retries."""
    app, accept = _billing_inbox(pg_url)
    tag = uuid.uuid4().hex[:8]
    good = [f"good-{tag}-{n}" for n in range(5)]

    async with serve_app(app):
        async with _poisoned(pg_url, f"poison-{tag}"):
            # Submitted before any writer runs: one batch (see GroupCommit.submit).
            outcomes = await asyncio.gather(
                *[accept(msg_id) for msg_id in [*good, f"poison-{tag}"]],
                return_exceptions=True,
            )
            stored_meanwhile = await _stored(app, good)
        retried = [await accept(msg_id) for msg_id in good]
        runs = await _runs_of(app, [answers[0].event_id for answers in retried])
    assert all(isinstance(o, Exception) and is_database_down(o) for o in outcomes), outcomes
    assert stored_meanwhile == {}
    assert [answers[0].status for answers in retried] == ["accepted"] * 5
    assert runs == 5


async def test_data_the_database_refuses_fails_only_the_delivery_that_carries_it(
    pg_url: str,
) -> None:
    """Five good events and one the database refuses as bad data, written as one batch:
    the statement fails, and the deliveries are then written one by one, so the five
    are accepted with their runs and only the sixth gets the error."""
    app, accept = _billing_inbox(pg_url)
    tag = uuid.uuid4().hex[:8]
    good = [f"good-{tag}-{n}" for n in range(5)]

    async with serve_app(app):
        async with _poisoned(pg_url, f"refused-{tag}", _REFUSE_DATA):
            # Submitted before any writer runs: one batch (see GroupCommit.submit).
            outcomes = await asyncio.gather(
                *[accept(msg_id) for msg_id in [*good[:2], f"refused-{tag}", *good[2:]]],
                return_exceptions=True,
            )
        stored = await _stored(app, [*good, f"refused-{tag}"])
        runs = await _runs_of(app, [event_id for event_id, _ in stored.values()])
        queued = await _queued_messages(app.state.settings)
    refused = outcomes.pop(2)
    assert isinstance(refused, DataError), refused
    assert [answers[0].status for answers in outcomes] == ["accepted"] * 5  # type: ignore[index]
    assert set(stored) == set(good)
    assert runs == 5
    assert queued == 5


async def test_database_failure_is_503_for_its_requests_and_nothing_answered_is_lost(
    pg_url: str,
) -> None:
    """Concurrent requests, some of whose events kill the connection: those are 503 with
    Retry-After, and so is any request that shared their batch; every 202 is stored with
    its run, every 503 is not, and a retry of a 503 is accepted."""
    settings = _settings(pg_url)
    app = create_app(settings, broker=_redis_broker(settings))
    tag = uuid.uuid4().hex[:8]
    msg_ids = [f"{'poison' if n % 4 == 0 else 'fine'}-{tag}-{n}" for n in range(16)]
    async with serve_app(app) as client:
        async with _poisoned(pg_url, f"poison-{tag}"):
            responses = await asyncio.gather(
                *[
                    client.post("/webhooks/billing", content=body, headers=headers)
                    for body, headers in map(_delivery, msg_ids)
                ]
            )
        stored = await _stored(app, msg_ids)
        refused = [m for m, r in zip(msg_ids, responses, strict=True) if r.status_code == 503]
        retries = [
            await client.post("/webhooks/billing", content=body, headers=headers)
            for body, headers in map(_delivery, [m for m in refused if m.startswith("fine")])
        ]
        runs = await _runs_of(app, [event_id for event_id, _ in stored.values()])
    for msg_id, response in zip(msg_ids, responses, strict=True):
        assert response.status_code in (202, 503), response.text
        if response.status_code == 202:
            assert response.json()["status"] == "accepted"
            assert stored[msg_id][0] == response.json()["event_id"]
        else:
            assert response.headers["retry-after"] == "5"
            assert msg_id not in stored
    assert {m for m in msg_ids if m.startswith("poison")} <= set(refused)
    assert [r.json()["status"] for r in retries] == ["accepted"] * len(retries)
    assert runs == len(stored)


async def test_broker_down_every_request_is_accepted_and_the_relay_sends_each_once(
    pg_url: str,
    tmp_path: Path,
) -> None:
    """Redis stopped: ten concurrent requests all 202 accepted and stored; Redis back:
    the relay sends each run once and the events become enqueued."""
    server = PrivateRedis(tmp_path)
    server.start()
    settings = _settings(pg_url, server.url, relay_after_s=0.2)
    app = create_app(settings, broker=_redis_broker(settings))
    tag = uuid.uuid4().hex[:8]
    msg_ids = [f"down-{tag}-{n}" for n in range(10)]
    try:
        async with serve_app(app) as client:
            server.stop()
            responses = await asyncio.gather(
                *[
                    client.post("/webhooks/billing", content=body, headers=headers)
                    for body, headers in map(_delivery, msg_ids)
                ]
            )
            while_down = await _stored(app, msg_ids)
            server.start()
            statuses: set[str] = set()
            for _ in range(100):
                await asyncio.sleep(0.1)
                statuses = {status for _, status in (await _stored(app, msg_ids)).values()}
                if statuses == {"enqueued"}:
                    break
            await asyncio.sleep(0.5)  # a second relay pass must not send them again
            queued = await _queued_messages(settings, server.url)
    finally:
        server.stop()
    assert [r.status_code for r in responses] == [202] * 10
    assert {r.json()["status"] for r in responses} == {"accepted"}
    assert {status for _, status in while_down.values()} == {"accepted"}
    assert len(while_down) == 10
    assert statuses == {"enqueued"}
    assert queued == 10


async def test_a_hung_broker_delays_no_answer_and_each_run_is_queued_once(
    pg_url: str,
    tmp_path: Path,
) -> None:
    """Redis stops answering without resetting anything: every webhook waited for the
    client's socket timeouts and retries (about 14 s, longer than GitHub waits). The
    answer now comes after webhooks.send_timeout_s (1 s), 202 accepted; the send goes
    on, and once Redis answers again each run is in the stream once and its event
    enqueued, although the relay looked at the events meanwhile."""
    server = PrivateRedis(tmp_path)
    server.start()
    settings = _settings(pg_url, server.url, relay_after_s=0.2)
    app = create_app(settings, broker=_redis_broker(settings))
    tag = uuid.uuid4().hex[:8]
    msg_ids = [f"hung-{tag}-{n}" for n in range(5)]
    try:
        async with serve_app(app) as client:
            body, headers = _delivery(f"warm-{tag}")
            await client.post("/webhooks/billing", content=body, headers=headers)
            with server.hung():
                started = time.monotonic()
                responses = await asyncio.gather(
                    *[
                        client.post("/webhooks/billing", content=body, headers=headers)
                        for body, headers in map(_delivery, msg_ids)
                    ]
                )
                waited = time.monotonic() - started
                await asyncio.sleep(1)  # the relay runs every 0.2 s meanwhile
            statuses: set[str] = set()
            for _ in range(100):
                statuses = {status for _, status in (await _stored(app, msg_ids)).values()}
                if statuses == {"enqueued"}:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # a later relay pass must not send them either
            queued = await _queued_messages(settings, server.url)
    finally:
        server.stop()
    assert [r.status_code for r in responses] == [202] * 5
    assert {r.json()["status"] for r in responses} == {"accepted"}
    assert waited < 3, f"answered after {waited:.1f} s"
    assert statuses == {"enqueued"}
    assert queued == 1 + 5


async def test_the_relay_does_not_send_again_runs_sent_but_not_yet_marked(pg_url: str) -> None:
    """Sent runs are marked ``enqueued`` in the background; a relay that comes first
    writes those marks before looking, so a run waiting in the stream is not sent twice."""
    settings = _settings(pg_url, relay_after_s=0.01)
    app = create_app(settings, broker=_redis_broker(settings))
    tag = uuid.uuid4().hex[:8]
    msg_ids = [f"sent-{tag}-{n}" for n in range(5)]
    async with serve_app(app) as client:
        responses = await asyncio.gather(
            *[
                client.post("/webhooks/billing", content=body, headers=headers)
                for body, headers in map(_delivery, msg_ids)
            ]
        )
        await asyncio.sleep(0.03)  # older than relay_after_s, before the marks' timer
        relayed = await app.state.webhook_inbox.relay()
        stored = await _stored(app, msg_ids)
        queued = await _queued_messages(app.state.settings)
    assert {r.json()["status"] for r in responses} == {"accepted"}
    assert relayed == 0
    assert {status for _, status in stored.values()} == {"enqueued"}
    assert queued == 5


async def test_a_connection_the_database_dropped_is_replaced_without_a_503(pg_url: str) -> None:
    """The kept connection's session is ended while idle (a database restart): the next
    batch is retried once on a new connection and its sender gets 202."""
    settings = _settings(pg_url)
    app = create_app(settings, broker=_redis_broker(settings))
    tag = uuid.uuid4().hex[:8]
    async with serve_app(app) as client:
        body, headers = _delivery(f"before-{tag}")
        before = await client.post("/webhooks/billing", content=body, headers=headers)
        admin = await asyncpg.connect(_admin_dsn(pg_url))
        try:
            ended = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND state = 'idle'"
            )
        finally:
            await admin.close()
        body, headers = _delivery(f"after-{tag}")
        after = await client.post("/webhooks/billing", content=body, headers=headers)
        stored = await _stored(app, [f"before-{tag}", f"after-{tag}"])
    assert before.status_code == 202
    assert ended >= 1
    assert after.status_code == 202, after.text
    assert after.json()["status"] == "accepted"
    assert len(stored) == 2
