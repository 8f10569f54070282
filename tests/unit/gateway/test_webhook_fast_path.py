"""POST /webhooks/{source} served ahead of FastAPI's router answers as the route does."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from tests.conftest import serve_app
from tests.unit.gateway.test_webhooks_api import SOURCES

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio


async def test_refusals_are_problem_documents_with_the_request_id(
    make_settings: Callable[..., Settings],
) -> None:
    """An unknown source is the 404 problem, with instance, request id and the security
    headers every answer carries."""
    app = create_app(
        make_settings(webhooks={"sources": SOURCES}), broker=broker, embedded=True, scheduler=False
    )
    async with serve_app(app) as client:
        response = await client.post("/webhooks/nowhere", content=b"{}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:jobs-service:problem:unknown-webhook-source"
    assert problem["instance"] == "/webhooks/nowhere"
    assert problem["request_id"] == response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_other_methods_and_paths_still_reach_fastapi(
    make_settings: Callable[..., Settings],
) -> None:
    """GET on a webhook URL is FastAPI's 405, a deeper path its 404, and the route is
    still in the OpenAPI document."""
    app = create_app(
        make_settings(webhooks={"sources": SOURCES}), broker=broker, embedded=True, scheduler=False
    )
    async with serve_app(app) as client:
        wrong_method = await client.get("/webhooks/billing")
        deeper = await client.post("/webhooks/billing/extra", content=b"{}")
        schema = (await client.get("/openapi.json")).json()
    assert wrong_method.status_code == 405
    assert wrong_method.json()["type"].endswith("method-not-allowed")
    assert deeper.status_code == 404
    assert "post" in schema["paths"]["/webhooks/{source}"]
