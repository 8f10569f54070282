"""JSON documents for PostgreSQL: text it would refuse is replaced, nothing else changes."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from jobs_service.core.text import portable
from jobs_service.infrastructure.documents import column_json, document, dumps


def test_a_document_without_refused_text_is_orjsons_own() -> None:
    """The common path is orjson's output, byte for byte (datetimes included)."""
    rows = [{"run_id": "r1", "content": "héllo ✓", "at": datetime(2030, 1, 1, tzinfo=UTC)}]
    assert dumps(rows) == orjson.dumps(rows)


def test_nul_characters_in_values_and_keys_become_replacement_characters() -> None:
    """A NUL anywhere in the document (content, error message, summary key) is U+FFFD."""
    rows = [{"content": "a\x00b", "error": {"message": "x\x00"}, "summary": {"k\x00": 1}}]
    assert orjson.loads(dumps(rows)) == [
        {"content": "a\ufffdb", "error": {"message": "x\ufffd"}, "summary": {"k\ufffd": 1}}
    ]


def test_a_backslash_followed_by_u0000_is_literal_text_and_kept() -> None:
    """The text \\u0000 (six characters) is not a NUL: the slow path keeps it exactly."""
    rows = [{"content": "C:\\u0000 and a real one\x00"}]
    assert b"\\\\u0000" in dumps(rows)
    assert orjson.loads(dumps(rows)) == [{"content": "C:\\u0000 and a real one\ufffd"}]
    assert orjson.loads(dumps([{"content": "C:\\u0000"}])) == [{"content": "C:\\u0000"}]


def test_a_lone_surrogate_becomes_a_replacement_character() -> None:
    """orjson cannot encode a lone surrogate at all; cleaned, the document encodes, and a
    pair written as two surrogates is kept as the character it forms."""
    assert orjson.loads(document({"message": "bad \udc80 byte"})) == {"message": "bad \ufffd byte"}
    assert portable("\ud83d\ude00") == "\U0001f600"


def test_column_json_keeps_the_standard_librarys_string_keys() -> None:
    """SQLAlchemy's default serializer wrote integer keys as strings; so does this one."""
    assert orjson.loads(column_json({1: "a\x00"})) == {"1": "a\ufffd"}
