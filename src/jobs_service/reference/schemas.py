"""JSON Schema fragments as short type names for reference tables.

Task arguments and HTTP bodies are documented from their JSON Schemas (pydantic's and
FastAPI's), which are exact but long; a table needs ``integer ≥ 1`` or
``array of RunOut``, with the full schema one click away.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from jobs_service.reference.markdown import code

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["default_text", "ref_name", "schema_type"]


def ref_name(ref: str) -> str:
    """``#/components/schemas/RunOut`` → ``RunOut``."""
    return ref.rsplit("/", 1)[-1]


def schema_type(node: Mapping[str, Any], link: Callable[[str], str] | None = None) -> str:
    """A one-line type: ``$ref`` names go through ``link`` (Markdown for a link)."""
    if "$ref" in node:
        name = ref_name(str(node["$ref"]))
        return link(name) if link else code(name)
    return _combined(node, link) or _literal(node) or _typed(node, link)


def _combined(node: Mapping[str, Any], link: Callable[[str], str] | None) -> str | None:
    # ``null`` is left out of unions: the default column says a key may be absent.
    for combinator, joiner in (("anyOf", " or "), ("oneOf", " or "), ("allOf", " and ")):
        if combinator in node:
            parts = [schema_type(item, link) for item in node[combinator]]
            return joiner.join(dict.fromkeys(part for part in parts if part != "null"))
    return None


def _literal(node: Mapping[str, Any]) -> str | None:
    if "const" in node:
        return code(json.dumps(node["const"]))
    if "enum" in node:
        return "one of " + ", ".join(code(json.dumps(value)) for value in node["enum"])
    return None


def _typed(node: Mapping[str, Any], link: Callable[[str], str] | None) -> str:
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(schema_type({**node, "type": item}, link) for item in kind)
    inner = node.get("items") if kind == "array" else node.get("additionalProperties")
    if kind in ("array", "object"):
        word = "array of " if kind == "array" else "object of "
        return word + schema_type(inner, link) if isinstance(inner, dict) and inner else kind
    if kind == "string" and "format" in node:
        return f"string ({node['format']})"
    return str(kind) + _bounds(node) if kind else "any JSON"


def _bounds(node: Mapping[str, Any]) -> str:
    marks = [
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
    ]
    found = [f"{sign} {node[key]}" for key, sign in marks if key in node]
    if "pattern" in node:
        found.append("matching " + code(str(node["pattern"])))
    return f", {', '.join(found)}" if found else ""


def default_text(node: Mapping[str, Any], *, required: bool) -> str:
    """``required``, the JSON default, or ``—`` (optional without a default)."""
    if required:
        return "required"
    if "default" in node:
        return code(json.dumps(node["default"]))
    return "—"
