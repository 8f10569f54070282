"""The HTTP reference documents every operation of the gateway's OpenAPI schema."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from jobs_service.reference.http import (
    api_routes,
    operation_anchor,
    operations,
    render_endpoint_index,
    render_http_reference,
    schema_anchor,
)
from jobs_service.reference.pages import Reference

if TYPE_CHECKING:
    from fastapi import FastAPI

APP: FastAPI = Reference().app()
SPEC = APP.openapi()
PAGE = render_http_reference(APP, problem_types="../api.md#errors")
INDEX = render_endpoint_index(APP, "reference/http.md")
_METHODS = {"get", "post", "put", "patch", "delete"}
SPEC_OPERATIONS = [
    (method.upper(), path)
    for path, item in SPEC["paths"].items()
    for method in item
    if method in _METHODS
]


@pytest.mark.parametrize(("method", "path"), SPEC_OPERATIONS, ids=" ".join)
def test_every_openapi_operation_has_a_section_and_an_index_row(method: str, path: str) -> None:
    """Each method on each path of /openapi.json is documented and indexed."""
    anchor = operation_anchor(method, path)
    assert f"### `{method} {path}` {{#{anchor}}}" in PAGE
    assert f"[`{method} {path}`](reference/http.md#{anchor})" in INDEX


def test_the_schema_covers_every_route_served() -> None:
    """No route answers requests without being in the schema the reference reads."""
    served = {(method, path) for method, path, _ in api_routes(APP)}
    assert served == set(SPEC_OPERATIONS)
    assert len(SPEC_OPERATIONS) >= 20


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/v1/audit", "admin"),
        ("POST", "/v1/tasks/{name}", "operate"),
        ("GET", "/v1/runs", "read"),
        ("GET", "/health", "none"),
        ("POST", "/webhooks/{source}", "signature"),
    ],
)
def test_scopes_are_read_from_the_route_dependencies(method: str, path: str, scope: str) -> None:
    """The scope shown is the one the route's dependency checks."""
    found = {(op.method, op.path): op.scope for op in operations(APP)}
    assert found[(method, path)] == scope


def test_every_api_route_but_health_and_webhooks_needs_a_key() -> None:
    """Only the probes, metrics and signed webhooks are served without an API key."""
    open_routes = {op.path for op in operations(APP) if op.scope in ("none", "signature")}
    assert open_routes == {"/health", "/ready", "/metrics", "/webhooks/{source}"}


def test_parameters_bodies_and_answers_are_shown() -> None:
    """A submit documents its path parameter, idempotency header, body and answers."""
    section = PAGE.split("### `POST /v1/tasks/{name}` ")[1].split("\n### ")[0]
    assert "| `name` | path |" in section
    assert "| `idempotency-key` | header |" in section
    assert "**Request body**: `application/json` [`SubmitIn`](#schema-submitin)" in section
    assert "| `202` |" in section


def test_problem_answers_link_to_the_problem_document() -> None:
    """Error answers are problem+json, linked to its schema, which links the types."""
    assert "`application/problem+json` [`Problem`](#schema-problem)" in PAGE
    assert "### `Problem` {#schema-problem}" in PAGE
    assert "[problem types](../api.md#errors)" in PAGE
    assert "| `request_id` | string |" in PAGE


@pytest.mark.parametrize("name", sorted(SPEC["components"]["schemas"]))
def test_every_component_schema_has_a_section(name: str) -> None:
    """Bodies link to schemas; each schema has the section the links point at."""
    assert f"### `{name}` {{#{schema_anchor(name)}}}" in PAGE


def test_every_link_within_the_page_has_its_anchor() -> None:
    """No link to a section that is not there (mkdocs only reports these)."""
    anchors = set(re.findall(r"\{#([^}]+)\}", PAGE))
    links = set(re.findall(r"\]\(#([^)]+)\)", PAGE))
    assert links
    assert links <= anchors


def test_anchors_are_unique() -> None:
    """Two sections with one anchor would make links land on the wrong one."""
    anchors = re.findall(r"\{#([^}]+)\}", PAGE)
    assert len(anchors) == len(set(anchors))
