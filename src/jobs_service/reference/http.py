"""The HTTP API reference, rendered from the gateway's OpenAPI schema.

FastAPI already knows every path, parameter, body and answer; what OpenAPI does not say
is which API-key scope a route demands, because that is a dependency
(:func:`~jobs_service.gateway.security.require_scope`), not a security scheme. The
scope is read from each route's dependency tree, so the reference cannot claim a scope
the code does not check.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi.routing import APIRoute, iter_route_contexts

from jobs_service.core.settings import Scope
from jobs_service.gateway.problems import PROBLEM_JSON, PROBLEM_SCHEMA
from jobs_service.reference.markdown import code, docstring, paragraph, table
from jobs_service.reference.schemas import default_text, schema_type

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fastapi import FastAPI
    from fastapi.dependencies.models import Dependant

__all__ = [
    "Operation",
    "api_routes",
    "operation_anchor",
    "operations",
    "render_endpoint_index",
    "render_http_reference",
    "schema_anchor",
]

_METHODS = ("get", "post", "put", "patch", "delete")
#: ``require_scope(scope)`` names its dependency ``require_<scope>``.
_SCOPE_DEPENDENCIES = {f"require_{scope}": scope for scope in typing.get_args(Scope)}
#: The one route authenticated by its sender's signature instead of an API key.
_SIGNED_PREFIX = "/webhooks/"
_PROBLEM = "Problem"


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path, as OpenAPI describes it, with the scope it needs."""

    method: str
    path: str
    scope: str
    tag: str
    spec: dict[str, Any]

    @property
    def summary(self) -> str:
        """OpenAPI's one-line summary."""
        return str(self.spec.get("summary", ""))


def api_routes(app: FastAPI) -> Iterator[tuple[str, str, APIRoute]]:
    """``(METHOD, path, route)`` for every route served, included routers' too (FastAPI
    keeps an included router as one entry of ``app.routes``; its routes are walked)."""
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and route.include_in_schema:
            # The context's path includes a prefix given to ``include_router``.
            path = context.path or route.path
            for method in sorted(route.methods or ()):
                yield method, path, route


def _scopes(dependant: Dependant) -> Iterator[str]:
    for dependency in dependant.dependencies:
        scope = _SCOPE_DEPENDENCIES.get(getattr(dependency.call, "__name__", ""))
        if scope is not None:
            yield scope
        yield from _scopes(dependency)


def _scope_of(path: str, route: APIRoute) -> str:
    found = sorted(set(_scopes(route.dependant)))
    if found:
        return ", ".join(found)
    return "signature" if path.startswith(_SIGNED_PREFIX) else "none"


def operations(app: FastAPI) -> list[Operation]:
    """Every documented operation, in the order OpenAPI lists them."""
    scopes = {
        (method.lower(), path): _scope_of(path, route) for method, path, route in api_routes(app)
    }
    spec = app.openapi()
    found: list[Operation] = []
    for path, item in spec.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                operation = item[method]
                tags = operation.get("tags") or ["other"]
                found.append(
                    Operation(method.upper(), path, scopes[(method, path)], tags[0], operation)
                )
    return found


def _slug(text: str) -> str:
    cleaned = "".join(char if char.isalnum() or char == "_" else "-" for char in text.lower())
    return "-".join(part for part in cleaned.split("-") if part)


def operation_anchor(method: str, path: str) -> str:
    """``GET /v1/runs/{run_id}`` → ``get-v1-runs-run_id``."""
    return f"{method.lower()}-{_slug(path)}"


def schema_anchor(name: str) -> str:
    """``Page_RunOut_`` → ``schema-page_runout_``."""
    return f"schema-{_slug(name)}"


def _link(name: str) -> str:
    return f"[{code(name)}](#{schema_anchor(name)})"


def _scope_text(scope: str) -> str:
    if scope == "none":
        return "none (unauthenticated)"
    if scope == "signature":
        return "the source's webhook signature (no API key)"
    return f"API key with {code(scope)}"


def render_endpoint_index(app: FastAPI, reference_page: str = "") -> str:
    """One table row per operation: method and path (linked), scope, summary."""
    rows = [
        [
            f"[{code(op.method + ' ' + op.path)}]({reference_page}#"
            f"{operation_anchor(op.method, op.path)})",
            code(op.scope) if op.scope not in ("none", "signature") else op.scope,
            paragraph(op.summary),
        ]
        for op in operations(app)
    ]
    return table(["method and path", "scope", "what"], rows) + "\n"


def _parameters(spec: dict[str, Any]) -> str | None:
    parameters = spec.get("parameters") or []
    if not parameters:
        return None
    rows = [
        [
            code(parameter["name"]),
            parameter.get("in", ""),
            paragraph(schema_type(parameter.get("schema", {}), _link)),
            default_text(parameter.get("schema", {}), required=bool(parameter.get("required"))),
            paragraph(parameter.get("description", "")),
        ]
        for parameter in parameters
    ]
    headers = ["name", "in", "type", "default", "description"]
    return "**Parameters**\n\n" + table(headers, rows, optional={"description"})


def _content(content: dict[str, Any]) -> str:
    kinds = []
    for media_type, body in content.items():
        if media_type == PROBLEM_JSON:
            kinds.append(f"{code(media_type)} {_link(_PROBLEM)}")
            continue
        schema = body.get("schema") or {}
        text = schema_type(schema, _link) if schema else "—"
        kinds.append(f"{code(media_type)} {text}")
    return "; ".join(kinds) or "—"


def _request_body(spec: dict[str, Any]) -> str | None:
    body = spec.get("requestBody")
    if not body:
        return None
    return "**Request body**: " + paragraph(_content(body.get("content", {})))


def _responses(spec: dict[str, Any]) -> str:
    rows = [
        [
            code(status),
            paragraph(answer.get("description", "")),
            _content(answer.get("content", {})),
        ]
        for status, answer in sorted(spec.get("responses", {}).items())
    ]
    return "**Responses**\n\n" + table(["status", "meaning", "body"], rows)


def _operation_section(op: Operation) -> str:
    parts = [
        f"### {code(op.method + ' ' + op.path)} {{#{operation_anchor(op.method, op.path)}}}",
        f"**{paragraph(op.summary)}** — scope: {_scope_text(op.scope)}",
    ]
    description = docstring(op.spec.get("description"))
    if description:
        parts.append(description)
    for block in (_parameters(op.spec), _request_body(op.spec)):
        if block:
            parts.append(block)
    parts.append(_responses(op.spec))
    return "\n\n".join(parts)


def _schema_section(name: str, schema: dict[str, Any]) -> str:
    parts = [f"### {code(name)} {{#{schema_anchor(name)}}}"]
    description = docstring(schema.get("description"))
    if description:
        parts.append(description)
    properties: dict[str, Any] = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", []))
        rows = [
            [
                code(field),
                paragraph(schema_type(node, _link)),
                default_text(node, required=field in required),
                paragraph(node.get("description", "")),
            ]
            for field, node in properties.items()
        ]
        parts.append(table(["field", "type", "default", "description"], rows))
    else:
        parts.append(f"```json\n{json.dumps(schema, indent=2)}\n```")
    return "\n\n".join(parts)


def _problem_section(problem_types: str) -> str:
    """The error document every route answers with, beside the schemas FastAPI lists
    (it is inlined in each response, so OpenAPI's components do not name it)."""
    intro = (
        f"Every error is a {code(PROBLEM_JSON)} document (RFC 9457); the kinds of "
        f"{code('type')} and when each is sent are listed under "
        f"[problem types]({problem_types}). Some problems add members, such as "
        f"{code('errors')} for invalid arguments."
    )
    section = _schema_section(_PROBLEM, PROBLEM_SCHEMA)
    heading, _, rest = section.partition("\n\n")
    return f"{heading}\n\n{intro}\n\n{rest}"


def render_http_reference(app: FastAPI, *, problem_types: str = "#schema-problem") -> str:
    """Every operation grouped by tag, then every schema they use.

    ``problem_types`` links to where the problem ``type`` URNs are explained.
    """
    ops = operations(app)
    parts: list[str] = []
    for tag in dict.fromkeys(op.tag for op in ops):
        parts.append(f"## {tag.capitalize()}")
        parts.extend(_operation_section(op) for op in ops if op.tag == tag)
    schemas: dict[str, Any] = app.openapi().get("components", {}).get("schemas", {})
    parts.append("## Schemas")
    parts.append(_problem_section(problem_types))
    parts.extend(_schema_section(name, schemas[name]) for name in sorted(schemas))
    return "\n\n".join(parts) + "\n"
