"""Messages and results built without pydantic's per-call validation are exactly what
TaskIQ's own validating path builds; anything unusual goes that path instead."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from taskiq import TaskiqMessage, TaskiqResult
from taskiq.labels import prepare_label
from taskiq.serializers import ORJSONSerializer

from jobs_service.infrastructure.wire import (
    decode_message,
    encode_message,
    new_result,
    parse_labels,
    prepare_labels,
    result_document,
)

RAW_LABELS: dict[str, Any] = {
    "source": "api",
    "queued_at": 1765000000.25,
    "attempt": 2,
    "retry_on_error": True,
    "blob": b"\x00\x01",
    "nested": {"a": 1},
}


def _taskiq_wire(labels: dict[str, Any]) -> bytes:
    prepared, types = {}, {}
    for key, value in labels.items():
        prepared[key], types[key] = prepare_label(value)
    message = TaskiqMessage(
        task_id="run-1",
        task_name="sync_accounts",
        labels=prepared,
        labels_types=types,
        args=[],
        kwargs={"limit": 5, "names": ["a", "b"]},
    )
    return ORJSONSerializer().dumpb(message.model_dump(mode="json"))


def test_labels_are_prepared_as_taskiq_prepares_them() -> None:
    """Same values, same type codes, for every label type TaskIQ knows."""
    labels, types = prepare_labels(RAW_LABELS)
    for key, value in RAW_LABELS.items():
        assert (labels[key], types[key]) == prepare_label(value)


def test_a_message_reads_back_as_taskiq_reads_it() -> None:
    """Decoding and label parsing agree with ``model_validate`` + ``parse_labels``."""
    data = _taskiq_wire(RAW_LABELS)
    expected = TaskiqMessage.model_validate(orjson.loads(data))
    expected.parse_labels()
    decoded = decode_message(data)
    assert decoded is not None
    parse_labels(decoded)
    assert decoded == expected
    assert decoded.labels["attempt"] == 2
    assert decoded.labels["retry_on_error"] is True
    assert decoded.labels["blob"] == b"\x00\x01"


def test_encoded_messages_are_what_taskiqs_formatter_writes() -> None:
    """The producer's bytes decode, through TaskIQ's validating path, to the same message."""
    labels, types = prepare_labels({"source": "api", "attempt": 1})
    message, encoded = encode_message("run-2", "sync_accounts", labels, types, {"n": 1})
    assert TaskiqMessage.model_validate(orjson.loads(encoded)) == message
    assert encoded == ORJSONSerializer().dumpb(message.model_dump(mode="json"))


@pytest.mark.parametrize(
    "data",
    [
        b"{broken",
        b"[1, 2]",
        b'{"task_id": 7, "task_name": "t", "labels": {}, "args": [], "kwargs": {}}',
        b'{"task_id": "i", "task_name": "t", "labels": [], "args": [], "kwargs": {}}',
        b'{"task_id": "i", "task_name": "t", "labels": {}, "args": [], "kwargs": {}, "x": 1}',
        b'{"task_id": "i", "task_name": "t", "labels": {}, "labels_types": {"a": "2"},'
        b' "args": [], "kwargs": {}}',
    ],
)
def test_anything_unusual_is_left_to_taskiqs_validating_path(data: bytes) -> None:
    """Malformed JSON, wrong types and unknown fields are not decoded here."""
    assert decode_message(data) is None


def test_an_unknown_label_type_is_refused_like_taskiq_refuses_it() -> None:
    """A label type code TaskIQ does not know raises instead of passing the raw value."""
    decoded = decode_message(
        b'{"task_id": "i", "task_name": "t", "labels": {"a": "1"}, "labels_types": {"a": 99},'
        b' "args": [], "kwargs": {}}'
    )
    assert decoded is not None
    with pytest.raises(ValueError, match="label type"):
        parse_labels(decoded)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"processed": 3, "errors": 0}, None),
        ("plain", None),
        (None, RuntimeError("boom")),
        ([1, {"nested": True}], None),
    ],
)
def test_result_documents_match_pydantics_json_dump(value: Any, error: Any) -> None:
    """The fast document (a count summary) and the fallback (errors, nested values) both
    equal ``model_dump(mode="json")``."""
    fields: dict[str, Any] = {
        "is_err": error is not None,
        "return_value": value,
        "execution_time": 0.25,
        "error": error,
        "labels": {"source": "api", "attempt": 1},
    }
    result = new_result(**fields)
    validated = TaskiqResult(**fields)
    assert result_document(result) == validated.model_dump(mode="json")
    assert result.is_err == validated.is_err
