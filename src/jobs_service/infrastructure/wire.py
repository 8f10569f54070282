"""TaskIQ's message and result models, built and read without per-call validation.

``TaskiqMessage`` and ``TaskiqResult`` are pydantic models: validating one costs 5-7 µs,
dumping one 3 µs, and preparing or parsing a label goes through an ``IntEnum`` lookup
each time. A worker does each of these for every run, and for a no-op task that was a
sixth of its CPU. Here the messages Jobs Service itself writes (JSON from orjson, with
exactly TaskIQ's fields) are read by checking the field types directly; anything else
(a message from another producer, a field of an unexpected type) goes to TaskIQ's own
validating path, so what a middleware or task receives is the same either way.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from pydantic import BaseModel
from taskiq import TaskiqMessage, TaskiqResult
from taskiq.labels import LabelType, prepare_label
from taskiq.message import BrokerMessage

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "STORE_RESULT_LABEL",
    "broker_message_of",
    "decode_message",
    "encode_message",
    "new_result",
    "parse_labels",
    "prepare_labels",
    "result_document",
]

M = TypeVar("M", bound=BaseModel)

#: A message labelled ``store_result=False`` gets no TaskIQ result in the result backend
#: (Jobs Service's own runs: their outcome is in the run history).
STORE_RESULT_LABEL = "store_result"

_MESSAGE_FIELDS = frozenset(TaskiqMessage.model_fields)
_LABEL_TYPES: dict[type, int] = {
    int: LabelType.INT.value,
    str: LabelType.STR.value,
    float: LabelType.FLOAT.value,
    bool: LabelType.BOOL.value,
}
_LABEL_PARSERS: dict[int, Callable[[Any], Any]] = {
    LabelType.ANY.value: lambda value: value,
    LabelType.INT.value: int,
    LabelType.STR.value: str,
    LabelType.FLOAT.value: float,
    LabelType.BOOL.value: lambda value: str(value).lower() == "true",
    LabelType.BYTES.value: base64.b64decode,
}
_JSON_SCALARS = (str, int, float, bool, type(None))
_set = object.__setattr__


def _bare(cls: type[M], fields: dict[str, Any]) -> M:
    """An instance of ``cls`` holding ``fields`` as they are (``model_construct`` without
    its per-field Python work). Only for values already of the declared types."""
    model = cls.__new__(cls)
    _set(model, "__dict__", fields)
    _set(model, "__pydantic_fields_set__", set(fields))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


def decode_message(data: bytes) -> TaskiqMessage | None:
    """The message in ``data`` if it is plain TaskIQ JSON with well-typed fields; None
    when only TaskIQ's validating formatter can tell (or reject) it."""
    try:
        fields = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if (
        type(fields) is not dict
        or type(fields.get("task_id")) is not str
        or type(fields.get("task_name")) is not str
        or type(fields.get("labels")) is not dict
        or type(fields.get("args")) is not list
        or type(fields.get("kwargs")) is not dict
        or not fields.keys() <= _MESSAGE_FIELDS
    ):
        return None
    types = fields.setdefault("labels_types", None)
    if types is not None and (
        type(types) is not dict or any(type(value) is not int for value in types.values())
    ):
        return None
    return _bare(TaskiqMessage, fields)


def parse_labels(message: TaskiqMessage) -> None:
    """``TaskiqMessage.parse_labels`` with the parsers looked up once."""
    types = message.labels_types
    if not types:
        return
    labels = message.labels
    for label, label_type in types.items():
        if label in labels:
            parser = _LABEL_PARSERS.get(label_type)
            if parser is None:
                msg = f"Unsupported label type: {label_type}"
                raise ValueError(msg)
            labels[label] = parser(labels[label])


def prepare_labels(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """Labels and their types as ``taskiq.labels.prepare_label`` would make them."""
    labels: dict[str, Any] = {}
    types: dict[str, int] = {}
    for key, value in raw.items():
        label_type = _LABEL_TYPES.get(type(value))
        if label_type is None:
            labels[key], types[key] = prepare_label(value)
        else:
            labels[key], types[key] = str(value), label_type
    return labels, types


def encode_message(
    task_id: str,
    task_name: str,
    labels: dict[str, Any],
    labels_types: dict[str, int],
    kwargs: dict[str, Any],
) -> tuple[TaskiqMessage, bytes]:
    """A message with JSON-ready ``kwargs`` and prepared labels, and its wire form (what
    TaskIQ's formatter with the orjson serializer writes)."""
    fields = {
        "task_id": task_id,
        "task_name": task_name,
        "labels": labels,
        "labels_types": labels_types,
        "args": [],
        "kwargs": kwargs,
    }
    return _bare(TaskiqMessage, fields), orjson.dumps(fields)


def broker_message_of(message: TaskiqMessage, encoded: bytes) -> BrokerMessage:
    """The broker's envelope of an encoded message."""
    return _bare(
        BrokerMessage,
        {
            "task_id": message.task_id,
            "task_name": message.task_name,
            "message": encoded,
            "labels": message.labels,
        },
    )


def new_result(
    *,
    is_err: bool,
    return_value: Any,
    execution_time: float,
    error: BaseException | None,
    labels: dict[str, Any],
) -> TaskiqResult[Any]:
    """A ``TaskiqResult`` (its fields need no conversion: they come from the run)."""
    return _bare(
        TaskiqResult,
        {
            "is_err": is_err,
            "log": None,
            "return_value": return_value,
            "execution_time": execution_time,
            "labels": labels,
            "error": error,
        },
    )


def result_document(result: TaskiqResult[Any]) -> dict[str, Any]:
    """``result.model_dump(mode="json")``, without pydantic for the common case: a
    success whose value and labels are plain JSON (a count summary)."""
    value = result.return_value
    plain_value = type(value) in _JSON_SCALARS or (
        type(value) is dict
        and all(type(key) is str and type(item) in _JSON_SCALARS for key, item in value.items())
    )
    if (
        result.error is None
        and plain_value
        and all(type(label) in _JSON_SCALARS for label in result.labels.values())
    ):
        return {
            "is_err": result.is_err,
            "log": result.log,
            "return_value": value,
            "execution_time": result.execution_time,
            "labels": result.labels,
            "error": None,
        }
    return result.model_dump(mode="json")
