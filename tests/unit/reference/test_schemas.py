"""JSON Schema fragments read as short types in reference tables."""

from __future__ import annotations

from typing import Any

import pytest

from jobs_service.reference.schemas import default_text, schema_type


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"type": "integer", "minimum": 1, "maximum": 500}, "integer, ≥ 1, ≤ 500"),
        ({"type": "string", "format": "date-time"}, "string (date-time)"),
        ({"type": "array", "items": {"type": "string"}}, "array of string"),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, "string"),
        ({"enum": ["a", "b"]}, 'one of `"a"`, `"b"`'),
        ({"type": "object", "additionalProperties": {"type": "integer"}}, "object of integer"),
        ({"$ref": "#/components/schemas/RunOut"}, "`RunOut`"),
        ({}, "any JSON"),
    ],
)
def test_schema_types(node: dict[str, Any], expected: str) -> None:
    """Common shapes in one line; null is left out of unions (the default says it)."""
    assert schema_type(node) == expected


def test_references_go_through_the_link_maker() -> None:
    """Named schemas become links where the caller can link them."""
    node = {"type": "array", "items": {"$ref": "#/$defs/RunOut"}}
    assert schema_type(node, lambda name: f"[{name}]") == "array of [RunOut]"


def test_defaults() -> None:
    """Required, a JSON default, or nothing to say."""
    assert default_text({"default": 5}, required=False) == "`5`"
    assert default_text({"default": None}, required=False) == "`null`"
    assert default_text({}, required=True) == "required"
    assert default_text({}, required=False) == "—"
