"""Request body limits: 413 problem+json on every endpoint, per-source webhook limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from jobs_service.gateway.body_limit import BodyLimitMiddleware
from jobs_service.infrastructure.models import JobRun
from jobs_service.webhooks.metrics import WEBHOOK_EVENTS
from tests.conftest import asgi_client, serve_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from fastapi import FastAPI
    from starlette.types import Receive, Scope, Send

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

LIMIT = 1024
SMALL_KEY = b"small-source-signing-key-0123456"
BIG_KEY = b"large-source-signing-key-0123456"
SOURCES: dict[str, Any] = {
    "small": {
        "scheme": "standard",
        "secrets": ["whsec_" + base64.b64encode(SMALL_KEY).decode()],
        "default_task": "record_webhook",
        "max_body_bytes": 4096,
    },
    "large": {
        "scheme": "standard",
        "secrets": ["whsec_" + base64.b64encode(BIG_KEY).decode()],
        "default_task": "record_webhook",
        "max_body_bytes": 16_384,
    },
}


def _app(make_settings: Callable[..., Settings]) -> FastAPI:
    settings = make_settings(api={"max_body_bytes": LIMIT}, webhooks={"sources": SOURCES})
    return create_app(settings, broker=broker, embedded=True, scheduler=False)


def _submission(size: int) -> bytes:
    """A valid POST /v1/tasks/count_items body of exactly ``size`` bytes."""
    empty = len(json.dumps({"kwargs": {"items": [""]}}).encode())
    return json.dumps({"kwargs": {"items": ["x" * (size - empty)]}}).encode()


async def _chunks(body: bytes, size: int = 100) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _signed(body: bytes, key: bytes, msg_id: str) -> dict[str, str]:
    ts = int(time.time())
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


def webhook_body(size: int) -> bytes:
    empty = len(json.dumps({"type": "t", "pad": ""}).encode())
    return json.dumps({"type": "t", "pad": "x" * (size - empty)}).encode()


async def _runs(app: FastAPI) -> int:
    async with app.state.runtime.database.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(JobRun))).scalar_one())


async def test_a_declared_length_over_the_limit_is_refused_before_the_app_runs(
    make_settings: Callable[..., Settings],
) -> None:
    """Content-Length one byte over: 413 body-too-large problem+json with the request id,
    and no run is queued; exactly at the limit is accepted."""
    app = _app(make_settings)
    async with serve_app(app) as client:
        over = await client.post(
            "/v1/tasks/count_items",
            content=_submission(LIMIT + 1),
            headers={"content-type": "application/json"},
        )
        runs_after_refusal = await _runs(app)
        at_limit = await client.post(
            "/v1/tasks/count_items",
            content=_submission(LIMIT),
            headers={"content-type": "application/json"},
        )
    assert over.status_code == 413
    assert over.headers["content-type"] == "application/problem+json"
    problem = over.json()
    assert problem["type"] == "urn:jobs-service:problem:body-too-large"
    assert problem["limit"] == LIMIT
    assert problem["instance"] == "/v1/tasks/count_items"
    assert problem["request_id"] == over.headers["x-request-id"]
    assert runs_after_refusal == 0
    assert at_limit.status_code == 202, at_limit.text


async def test_a_streamed_body_is_cut_off_at_the_limit(
    make_settings: Callable[..., Settings],
) -> None:
    """Chunked (no Content-Length): over the limit is a 413 — not the 400 the framework
    gives a body that ends early — and nothing is queued; under it is accepted."""
    app = _app(make_settings)
    async with serve_app(app) as client:
        over = await client.post(
            "/v1/tasks/count_items",
            content=_chunks(_submission(LIMIT * 3)),
            headers={"content-type": "application/json"},
        )
        runs_after_refusal = await _runs(app)
        under = await client.post(
            "/v1/tasks/count_items",
            content=_chunks(_submission(LIMIT - 10)),
            headers={"content-type": "application/json"},
        )
    assert "content-length" not in over.request.headers
    assert over.status_code == 413, over.text
    assert over.json()["type"].endswith("body-too-large")
    assert runs_after_refusal == 0
    assert under.status_code == 202, under.text


async def test_endpoints_without_a_body_parameter_are_limited_too(
    make_settings: Callable[..., Settings],
) -> None:
    """A large body sent to any path (even one that reads none) is a 413."""
    async with serve_app(_app(make_settings)) as client:
        health = await client.post("/health", content=b"x" * (LIMIT + 1))
        unknown = await client.put("/v1/nowhere", content=b"x" * (LIMIT + 1))
    assert (health.status_code, unknown.status_code) == (413, 413)


async def test_webhook_sources_keep_their_own_limits(
    make_settings: Callable[..., Settings],
) -> None:
    """Above the API limit but within its source's: accepted. Over its source's (but
    within the largest source's): the route's 413, counted as too_large. Over every
    source's: refused by the middleware. Each 413 names the source's own limit."""
    too_large = WEBHOOK_EVENTS.labels("small", "too_large")
    counted_before = too_large._value.get()
    app = _app(make_settings)
    async with serve_app(app, client_host="203.0.113.9") as client:
        within = webhook_body(3000)
        accepted = await client.post(
            "/webhooks/small", content=within, headers=_signed(within, SMALL_KEY, "m1")
        )
        over_source = webhook_body(5000)
        refused_by_route = await client.post(
            "/webhooks/small", content=over_source, headers=_signed(over_source, SMALL_KEY, "m2")
        )
        large = webhook_body(12_000)
        large_ok = await client.post(
            "/webhooks/large", content=large, headers=_signed(large, BIG_KEY, "m3")
        )
        huge = webhook_body(20_000)
        refused_by_middleware = await client.post(
            "/webhooks/large", content=huge, headers=_signed(huge, BIG_KEY, "m4")
        )
        small_refused_early = await client.post(
            "/webhooks/small", content=huge, headers=_signed(huge, SMALL_KEY, "m5")
        )
    assert accepted.status_code == 202, accepted.text
    assert refused_by_route.status_code == 413
    assert refused_by_route.json()["detail"] == "the body exceeds 4096 bytes"
    assert refused_by_route.json()["limit"] == 4096
    assert too_large._value.get() == counted_before + 1
    assert large_ok.status_code == 202, large_ok.text
    assert refused_by_middleware.status_code == 413
    assert refused_by_middleware.json()["limit"] == 16_384
    # Refused by the middleware (over every source's limit), it still names its own.
    assert small_refused_early.status_code == 413
    assert small_refused_early.json()["limit"] == 4096


async def test_without_webhook_sources_webhooks_get_the_api_limit(
    make_settings: Callable[..., Settings],
) -> None:
    """No source configured: /webhooks/* bodies are capped at api.max_body_bytes."""
    app = create_app(
        make_settings(api={"max_body_bytes": LIMIT}), broker=broker, embedded=True, scheduler=False
    )
    async with serve_app(app) as client:
        response = await client.post("/webhooks/anything", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413


async def test_an_app_that_swallows_the_error_still_answers_413() -> None:
    """Whatever the inner app answers after its body was cut off, the client gets one
    413 (and none of the inner answer)."""

    async def swallowing(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception:  # noqa: BLE001 - this app answers 400 to any read failure
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"bad body"})

    app = BodyLimitMiddleware(swallowing, api_limit=10)
    async with asgi_client(app) as client:  # type: ignore[arg-type]
        response = await client.post("/v1/x", content=_chunks(b"y" * 50, size=5))
    assert response.status_code == 413
    assert response.json()["detail"] == "the body exceeds 10 bytes"
    assert b"bad body" not in response.content
