"""A gateway served under a path prefix (uvicorn's ``root_path``, behind a proxy that
strips the prefix): every path rule applies to the path its routes see, the same as
without one, and the paths it answers with carry the prefix."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from jobs_service.gateway.security_headers import API_CSP
from tests.support.processes import free_port
from tests.unit.gateway.test_body_limit import webhook_body
from tests.unit.gateway.test_webhooks_api import standard

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

API_LIMIT = 1024
SOURCE_LIMIT = 16_384
SIGNING_KEY = b"root-path-source-signing-key-012"
OPERATOR = "root-path-operator-key"
SOURCES: dict[str, Any] = {
    "large": {
        "scheme": "standard",
        "secrets": ["whsec_" + base64.b64encode(SIGNING_KEY).decode()],
        "default_task": "record_webhook",
        "max_body_bytes": SOURCE_LIMIT,
    }
}


def _signed(body: bytes, msg_id: str) -> dict[str, str]:
    return standard(body, msg_id, key=SIGNING_KEY)


@pytest.fixture(params=["", "/jobs"], ids=["no-prefix", "prefix"])
async def gateway(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client of a real uvicorn server with ``root_path`` (``""`` or ``/jobs``),
    sending paths as a proxy that strips the prefix forwards them; and the prefix."""
    root_path: str = request.param
    settings = make_settings(
        api={"max_body_bytes": API_LIMIT},
        webhooks={"sources": SOURCES},
        api_keys=[
            {
                "name": "operator",
                "sha256": hashlib.sha256(OPERATOR.encode()).hexdigest(),
                "scopes": ["admin"],
            }
        ],
    )
    app = create_app(settings, broker=broker, embedded=True, scheduler=False, announce=False)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            root_path=root_path,
            log_level="warning",
            lifespan="on",
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client, root_path
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(serving, 30)


async def test_webhooks_get_their_sources_body_limit(
    gateway: tuple[httpx.AsyncClient, str],
) -> None:
    """A delivery larger than the API's limit and within its source's is accepted; one
    above its source's limit is refused naming that limit."""
    client, _ = gateway
    within = webhook_body(3 * API_LIMIT)
    beyond = webhook_body(SOURCE_LIMIT + 1)
    accepted = await client.post("/webhooks/large", content=within, headers=_signed(within, "a"))
    refused = await client.post("/webhooks/large", content=beyond, headers=_signed(beyond, "b"))
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "accepted"
    assert refused.status_code == 413
    assert refused.json()["limit"] == SOURCE_LIMIT


async def test_operator_actions_are_audited_and_answered_with_api_headers(
    gateway: tuple[httpx.AsyncClient, str],
) -> None:
    """A submit and a new schedule are recorded in the audit log, answers are not
    cached, and each ``Location`` is the new resource's path under the prefix."""
    client, root_path = gateway
    auth = {"Authorization": f"Bearer {OPERATOR}"}
    submitted = await client.post(
        "/v1/tasks/count_items", json={"kwargs": {"items": ["a"]}}, headers=auth
    )
    created = await client.post(
        "/v1/schedules",
        json={
            "name": "hourly",
            "task": "count_items",
            "kwargs": {"items": []},
            "schedule": {"type": "interval", "seconds": 3600},
        },
        headers=auth,
    )
    audit = await client.get("/v1/audit", headers=auth)
    run_id = submitted.json()["run_id"]
    schedule_id = created.json()["id"]
    assert submitted.status_code == 202
    assert submitted.headers["cache-control"] == "no-store"
    assert submitted.headers["content-security-policy"] == API_CSP
    assert submitted.headers["location"] == f"{root_path}/v1/runs/{run_id}"
    assert created.headers["location"] == f"{root_path}/v1/schedules/{schedule_id}"
    entries = audit.json()["items"]
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
        ("operator", "POST /v1/schedules", str(schedule_id)),
        ("operator", "POST /v1/tasks/{name}", "count_items"),
    ]


async def test_the_docs_page_gets_no_content_security_policy(
    gateway: tuple[httpx.AsyncClient, str],
) -> None:
    """Swagger UI loads its scripts from a CDN: a CSP allowing nothing would blank it.
    The page finds the schema under the prefix."""
    client, root_path = gateway
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "content-security-policy" not in page.headers
    assert f"'{root_path}/openapi.json'" in page.text


async def test_a_malformed_body_without_a_key_is_401(
    gateway: tuple[httpx.AsyncClient, str],
) -> None:
    """An unauthenticated caller learns it needs a key, not how its body failed."""
    client, _ = gateway
    response = await client.post(
        "/v1/tasks/count_items", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 401
    assert response.json()["type"] == "urn:jobs-service:problem:unauthenticated"
