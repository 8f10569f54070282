"""JSON written to PostgreSQL, made storable whatever text it carries.

A run's record carries text nobody checked: the content a domain answered, the message
of an exception, the keys of a summary, a provider's error detail. PostgreSQL refuses a
NUL character in ``text`` and ``jsonb`` (``unsupported Unicode escape sequence``), and
no encoder takes a lone surrogate; a record refused for one character lost the run's
outcome (it stayed ``running`` for ever). So every document the service writes to
PostgreSQL goes through :func:`dumps`, which replaces such characters with U+FFFD
(:func:`~jobs_service.core.text.portable`). SQLite keeps them, and is written as is.

The common case costs one search of the encoded bytes: orjson writes a NUL as the escape
``\\u0000``, and writes a lone surrogate not at all (it raises). Only a document that
holds that escape is encoded again from cleaned values. The search may also find a
string that holds a backslash followed by ``u0000`` (encoded ``\\\\u0000``): cleaning
leaves such text as it is, so the slow path then writes the same document, correctly.
"""

from __future__ import annotations

from typing import Any

import orjson

from jobs_service.core.text import portable_values

__all__ = ["column_json", "document", "dumps"]

_ESCAPED_NUL = b"\\u0000"


def dumps(value: Any, *, option: int | None = None) -> bytes:
    """``orjson.dumps(value)``, with characters PostgreSQL refuses replaced."""
    try:
        encoded = orjson.dumps(value, option=option)
    except orjson.JSONEncodeError:
        # A lone surrogate, most likely: cleaned, it encodes. Anything else (a value
        # that is not JSON) raises again here, as it did.
        return orjson.dumps(portable_values(value), option=option)
    if _ESCAPED_NUL in encoded:
        return orjson.dumps(portable_values(value), option=option)
    return encoded


def document(value: Any) -> str:
    """:func:`dumps` as text: a parameter bound as ``json``."""
    return dumps(value).decode()


def column_json(value: Any) -> str:
    """The engine's serializer of JSON columns on PostgreSQL (``deliveries.error``,
    ``webhook_events.error`` and every other ``jsonb`` written through SQLAlchemy).

    Non-string keys become strings, as the standard library's encoder made them.
    """
    return dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
