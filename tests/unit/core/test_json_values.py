"""JSON values compared as JSON: numbers by value, and nothing else is a number."""

from __future__ import annotations

from typing import Any

import pytest

from jobs_service.core.json_values import json_equal


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (10**16, 1e16),
        (-0.0, 0.0),
        (-0.0, 0),
        (1, 1.0),
        ({"a": [1, {"b": -0.0}]}, {"a": (1.0, {"b": 0})}),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        (None, None),
        ("x", "x"),
        (True, True),
    ],
)
def test_equal_json_values(left: Any, right: Any) -> None:
    """Values JSON holds equal are equal, in either order."""
    assert json_equal(left, right)
    assert json_equal(right, left)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (1, 1.5),
        ("1", 1),
        (True, 1),
        (False, 0),
        (True, 1.0),
        (None, 0),
        (None, False),
        ([1, 2], [2, 1]),
        ([1], [1, 1]),
        ({"a": 1}, {"a": 1, "b": 1}),
        ({"a": 1}, {"b": 1}),
        ({"a": 1}, [("a", 1)]),
        (2**63, 2**63 + 1),
    ],
)
def test_different_json_values(left: Any, right: Any) -> None:
    """Values JSON tells apart are different, in either order."""
    assert not json_equal(left, right)
    assert not json_equal(right, left)
