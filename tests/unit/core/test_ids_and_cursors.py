"""Run ids and pagination cursors."""

from __future__ import annotations

import uuid

import pytest

from jobs_service.core.ids import is_run_id, new_run_id
from jobs_service.core.pagination import InvalidCursorError, decode_cursor, encode_cursor


def test_run_ids_are_uuid7_and_time_ordered() -> None:
    """Version 7, RFC variant, and later ids sort after earlier ones."""
    ids = [new_run_id() for _ in range(200)]
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert all(is_run_id(value) for value in ids)
    assert len(set(ids)) == 200
    prefixes = [value[:12] for value in ids]  # the 48-bit millisecond timestamp
    assert prefixes == sorted(prefixes)


def test_numeric_ids_are_not_run_ids() -> None:
    """Row ids and run ids cannot be confused."""
    assert not is_run_id("12345")
    assert not is_run_id("Z" * 32)


def test_cursor_round_trip_and_garbage() -> None:
    """A cursor decodes to the id it encodes; anything else is refused."""
    assert decode_cursor(encode_cursor(987654321)) == 987654321
    for bad in ("", "abc", encode_cursor(5)[:-2] + "!!", "YzE6eHl6"):
        with pytest.raises(InvalidCursorError):
            decode_cursor(bad)
