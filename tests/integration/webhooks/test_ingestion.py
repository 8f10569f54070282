"""Webhook ingestion against the real PostgreSQL and Redis: nothing accepted is lost."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select

from jobs_service.broker import build_broker, stream_names
from jobs_service.core.settings import Settings
from jobs_service.gateway import create_app
from jobs_service.infrastructure.models import JobRun, WebhookEvent
from jobs_service.tasks.registry import list_tasks
from tests.conftest import serve_app
from tests.support.processes import free_port
from tests.support.redis_server import PrivateRedis
from tests.unit.gateway.test_webhooks_api import SOURCES, standard

if TYPE_CHECKING:
    from pathlib import Path

    from fastapi import FastAPI
    from taskiq import AsyncBroker

pytestmark = pytest.mark.anyio


def _redis_broker(settings: Settings) -> AsyncBroker:
    from jobs_service.broker import broker as shared  # noqa: PLC0415

    target = build_broker(settings)
    for info in list_tasks(shared):
        target.register_task(info.task.original_func, info.name, **info.task.labels)
    return target


def _gateway(pg_url: str, redis_prefix: str) -> tuple[Settings, FastAPI]:
    """A gateway on the test's PostgreSQL and a Redis prefix of its own, with the
    webhook sources of the unit tests."""
    settings = Settings(
        database_url=pg_url,
        redis_url="redis://127.0.0.1:6379/0",
        redis_prefix=f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
        webhooks={"sources": SOURCES},
    )
    return settings, create_app(settings, broker=_redis_broker(settings))


async def _count(app: FastAPI, model: Any, *where: Any) -> int:
    async with app.state.runtime.database.sessions() as session:
        return int(
            (
                await session.execute(select(func.count()).select_from(model).where(*where))
            ).scalar_one()
        )


async def test_twenty_concurrent_deliveries_of_one_event_make_one_run(
    pg_url: str,
    redis_prefix: str,
) -> None:
    """The sender's retries racing each other: one event row, one run, 19 duplicates."""
    settings, app = _gateway(pg_url, redis_prefix)
    msg_id = f"msg-{uuid.uuid4().hex}"
    body = json.dumps({"type": "invoice.paid"}).encode()
    async with serve_app(app) as client:
        responses = await asyncio.gather(
            *[
                client.post("/webhooks/billing", content=body, headers=standard(body, msg_id))
                for _ in range(20)
            ]
        )
        events = await _count(app, WebhookEvent, WebhookEvent.external_id == msg_id)
        event_id = responses[0].json()["event_id"]
        runs = await _count(app, JobRun, JobRun.webhook_event_id == event_id)
        async with Redis.from_url("redis://127.0.0.1:6379/0") as redis:
            queued = await redis.xlen(stream_names(settings)["stream"])
    assert {r.status_code for r in responses} == {202}
    assert sorted(r.json()["status"] for r in responses) == ["accepted"] + ["duplicate"] * 19
    assert {r.json()["event_id"] for r in responses} == {event_id}
    assert events == 1
    assert runs == 1
    assert queued == 1


async def test_broker_down_at_ingest_then_the_relay_enqueues(
    pg_url: str,
    tmp_path: Path,
) -> None:
    """Redis stopped: still 202 and the event is stored; Redis back: the relay sends it."""
    server = PrivateRedis(tmp_path)
    server.start()
    settings = Settings(
        database_url=pg_url,
        redis_url=server.url,
        redis_prefix=f"relay-{uuid.uuid4().hex[:6]}",
        webhooks={"sources": SOURCES, "relay_after_s": 0.2},
    )
    app = create_app(settings, broker=_redis_broker(settings))
    body = json.dumps({"type": "invoice.paid"}).encode()
    try:
        async with serve_app(app) as client:
            server.stop()
            response = await client.post(
                "/webhooks/billing", content=body, headers=standard(body, f"m-{uuid.uuid4().hex}")
            )
            event_id = response.json()["event_id"]
            accepted = await _count(
                app, WebhookEvent, WebhookEvent.id == event_id, WebhookEvent.status == "accepted"
            )
            server.start()
            enqueued = 0
            for _ in range(50):
                await asyncio.sleep(0.1)
                enqueued = await _count(
                    app,
                    WebhookEvent,
                    WebhookEvent.id == event_id,
                    WebhookEvent.status == "enqueued",
                )
                if enqueued:
                    break
            async with Redis.from_url(server.url) as redis:
                queued = await redis.xlen(stream_names(settings)["stream"])
    finally:
        server.stop()
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    assert accepted == 1
    assert enqueued == 1
    assert queued == 1


async def test_database_down_is_503_so_the_sender_retries(redis_prefix: str) -> None:
    """Nothing can be stored: 503 with Retry-After, never a 202."""
    closed = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/jobs"
    settings = Settings(
        database_url=closed,
        database={"connect_timeout_s": 1},
        redis_url="redis://127.0.0.1:6379/0",
        redis_prefix=redis_prefix,
        webhooks={"sources": SOURCES},
    )
    app = create_app(settings, broker=_redis_broker(settings))
    body = json.dumps({"type": "invoice.paid"}).encode()
    async with serve_app(app) as client:
        response = await client.post("/webhooks/billing", content=body, headers=standard(body))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"] == "application/problem+json"


async def test_over_long_ids_and_types_are_stored_without_failing_their_batch(
    pg_url: str,
    redis_prefix: str,
) -> None:
    """PostgreSQL enforces the columns' lengths, so an id or type longer than its column
    would fail the whole batch (every concurrent request a 500). Ids longer than 255
    characters are stored as their digest: two that share their first 255 characters
    stay two events, and a repeat of one is a duplicate. Types are cut to 200."""
    _, app = _gateway(pg_url, redis_prefix)
    stem = f"long-{uuid.uuid4().hex}-" + "x" * 280
    long_type = "invoice." + "t" * 250
    requests = [
        (f"{stem}a", json.dumps({"type": "invoice.paid"}).encode()),
        (f"{stem}b", json.dumps({"type": "invoice.paid"}).encode()),
        (f"short-{uuid.uuid4().hex}", json.dumps({"type": long_type}).encode()),
        (f"ok-{uuid.uuid4().hex}", json.dumps({"type": "invoice.paid"}).encode()),
    ]
    async with serve_app(app) as client:
        answers = await asyncio.gather(
            *[
                client.post("/webhooks/billing", content=body, headers=standard(body, msg_id))
                for msg_id, body in requests
            ]
        )
        first_id, first_body = requests[0]
        again = await client.post(
            "/webhooks/billing", content=first_body, headers=standard(first_body, first_id)
        )
        async with app.state.runtime.database.sessions() as session:
            stored = (
                await session.execute(
                    select(WebhookEvent.external_id, WebhookEvent.event_type).where(
                        WebhookEvent.id.in_([a.json()["event_id"] for a in answers])
                    )
                )
            ).all()
    assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
    assert [a.json()["status"] for a in answers] == ["accepted"] * 4
    assert again.json() == {"event_id": answers[0].json()["event_id"], "status": "duplicate"}
    ids = {external_id for external_id, _ in stored}
    assert len(ids) == 4
    assert all(len(external_id) <= 255 for external_id in ids)
    assert sum(external_id.startswith("id-sha256:") for external_id in ids) == 2
    assert {event_type for _, event_type in stored} == {"invoice.paid", long_type[:200]}


async def test_a_nul_in_one_delivery_fails_only_that_delivery(
    pg_url: str,
    redis_prefix: str,
) -> None:
    """PostgreSQL text cannot hold a NUL: an event type with one failed the statement of
    its whole batch, every concurrent request a 500. It is a 400 of its own now, and the
    deliveries that arrived with it are accepted."""
    _, app = _gateway(pg_url, redis_prefix)
    poison = b'{"type": "invoice.\\u0000paid"}'
    goods = [json.dumps({"type": "invoice.paid", "n": n}).encode() for n in range(20)]
    async with serve_app(app, client_host="203.0.113.9") as client:
        answers = await asyncio.gather(
            *[
                client.post(
                    "/webhooks/billing", content=body, headers=standard(body, uuid.uuid4().hex)
                )
                for body in [*goods[:10], poison, *goods[10:]]
            ]
        )
    refused = answers.pop(10)
    assert refused.status_code == 400
    assert refused.json()["type"] == "urn:jobs-service:problem:malformed-webhook"
    assert [a.status_code for a in answers] == [202] * 20
    assert {a.json()["status"] for a in answers} == {"accepted"}
