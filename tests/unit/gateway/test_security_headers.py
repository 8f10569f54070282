"""Security headers on every response; CORS closed unless origins are configured."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from jobs_service.gateway.security_headers import API_CSP, HSTS
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import Callable

    from fastapi import FastAPI

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

ALWAYS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
CONSOLE = "https://ops.example.com"


def _app(make_settings: Callable[..., Settings], **api: Any) -> FastAPI:
    return create_app(make_settings(api=api), broker=broker, embedded=True, scheduler=False)


def _preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_api_answers_and_errors_carry_every_header(
    make_settings: Callable[..., Settings],
) -> None:
    """A list, a problem (404, 422) and a 413 under /v1/: nosniff, DENY, no-referrer,
    the deny-all CSP and no-store."""
    async with serve_app(_app(make_settings, max_body_bytes=100)) as client:
        answers = [
            await client.get("/v1/tasks"),
            await client.get("/v1/runs/nope"),
            await client.post("/v1/tasks/count_items", json={"kwargs": {"items": 3}}),
            await client.post("/v1/tasks/count_items", content=b"x" * 101),
        ]
    assert [answer.status_code for answer in answers] == [200, 404, 422, 413]
    for answer in answers:
        for name, value in ALWAYS.items():
            assert answer.headers.get(name) == value, (answer.url, name)
        assert answer.headers["content-security-policy"] == API_CSP
        assert answer.headers["cache-control"] == "no-store"
        assert "strict-transport-security" not in answer.headers


async def test_outside_v1_there_is_no_cache_control_but_the_rest(
    make_settings: Callable[..., Settings],
) -> None:
    """/health and /openapi.json get the headers and CSP; caching is theirs to decide."""
    async with serve_app(_app(make_settings)) as client:
        health = await client.get("/health")
        spec = await client.get("/openapi.json")
    for answer in (health, spec):
        assert answer.status_code == 200
        assert {name: answer.headers.get(name) for name in ALWAYS} == ALWAYS
        assert answer.headers["content-security-policy"] == API_CSP
        assert "cache-control" not in answer.headers


async def test_the_docs_pages_get_no_csp_so_their_cdn_scripts_still_load(
    make_settings: Callable[..., Settings],
) -> None:
    """Swagger UI and ReDoc pull scripts from a CDN and run an inline bootstrap, which the
    API's policy would block: those pages get no CSP, but still the other headers."""
    async with serve_app(_app(make_settings)) as client:
        pages = [await client.get("/docs"), await client.get("/redoc")]
    for page in pages:
        assert page.status_code == 200
        assert re.search(r'<script src="https://[^"]+"', page.text), page.text
        assert "content-security-policy" not in page.headers
        assert {name: page.headers.get(name) for name in ALWAYS} == ALWAYS


async def test_hsts_only_when_configured(make_settings: Callable[..., Settings]) -> None:
    """api.hsts = true adds Strict-Transport-Security to every answer; off by default."""
    async with serve_app(_app(make_settings, hsts=True)) as client:
        on = [await client.get("/health"), await client.get("/v1/tasks")]
    async with serve_app(_app(make_settings)) as client:
        off = await client.get("/health")
    assert [answer.headers.get("strict-transport-security") for answer in on] == [HSTS, HSTS]
    assert "strict-transport-security" not in off.headers


async def test_cors_is_closed_by_default(make_settings: Callable[..., Settings]) -> None:
    """No origins configured: neither a preflight nor a simple request from any origin
    gets an Access-Control-Allow-Origin, so browsers on other sites cannot read answers."""
    async with serve_app(_app(make_settings)) as client:
        preflight = await client.options("/v1/tasks/count_items", headers=_preflight(CONSOLE))
        simple = await client.get("/v1/tasks", headers={"Origin": CONSOLE})
    assert simple.status_code == 200
    for answer in (preflight, simple):
        assert not any(name.startswith("access-control-") for name in answer.headers)


async def test_configured_origins_and_only_those_get_cors(
    make_settings: Callable[..., Settings],
) -> None:
    """A configured origin's preflight is allowed for GET/POST/PATCH/DELETE with the
    Authorization, Content-Type and Idempotency-Key headers; PUT and other origins are
    not."""
    async with serve_app(_app(make_settings, cors_origins=[CONSOLE])) as client:
        allowed = await client.options("/v1/tasks/count_items", headers=_preflight(CONSOLE))
        simple = await client.get("/v1/tasks", headers={"Origin": CONSOLE})
        put = await client.options("/v1/tasks/count_items", headers=_preflight(CONSOLE, "PUT"))
        other = await client.options(
            "/v1/tasks/count_items", headers=_preflight("https://evil.example")
        )
        other_simple = await client.get("/v1/tasks", headers={"Origin": "https://evil.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == CONSOLE
    methods = {m.strip() for m in allowed.headers["access-control-allow-methods"].split(",")}
    assert methods == {"GET", "POST", "PATCH", "DELETE"}
    headers = {
        h.strip().lower() for h in allowed.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "content-type", "idempotency-key"} <= headers
    assert allowed.headers["x-content-type-options"] == "nosniff"
    assert simple.headers["access-control-allow-origin"] == CONSOLE
    assert put.status_code == 400
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in other_simple.headers


@pytest.mark.parametrize(
    "origin", ["*", "https://ops.example.com/", "ops.example.com", "https://ops.example.com/app"]
)
def test_cors_origins_must_be_exact_origins(
    make_settings: Callable[..., Settings], origin: str
) -> None:
    """A wildcard, a path or a missing scheme is a configuration error, not a silent
    mismatch with what browsers send."""
    with pytest.raises(ValidationError, match="is not an origin"):
        make_settings(api={"cors_origins": [origin]})


def test_a_bad_origin_is_named_by_position_not_echoed(
    make_settings: Callable[..., Settings],
) -> None:
    """An origin pasted with credentials must not reach the error (and the log or the
    terminal that shows it): the message names the entry's position."""
    with pytest.raises(ValidationError) as caught:
        make_settings(api={"cors_origins": ["https://ok.example.com", "https://u:hunter2@x/"]})
    message = str(caught.value)
    assert "entry 1 is not an origin" in message
    assert "hunter2" not in message
