"""Reading and writing a sender's JSON without changing its numbers.

orjson, fast and strict, reads an integer beyond 64 bits as a float: two amounts that
differ only in their last digits become one number. A webhook body is the sender's
record, so what is read from it (an event id, the body shown or handed to a task) must
keep every digit. Integers that long need 19 digits or more, so a body without 19
digits in a row is read by orjson as is; one with them is read again by the standard
library, whose integers are exact (after orjson, so the strict checks still apply:
``NaN``, lone surrogates, numbers out of a double's range stay malformed).

A number with a fraction or an exponent is a double, 17 significant digits: where every
digit of one matters (an event id), :func:`loads_exact` reads it as its text instead
(``floats_as_text``).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["NumberText", "dumps_exact", "loads_exact"]

#: The shortest run of digits whose integer may not fit 64 bits (below -2**63 or
#: above 2**64 - 1), as :data:`_DIGITS_AS_ZEROS` writes it.
_LONG_DIGITS = b"0" * 19
#: Every digit as ``0``, every other byte as a space: one ``translate`` and one
#: ``find`` look for a long run of digits in 1.5 µs a KiB, where a regular expression
#: (``[0-9]{19}``) took 12 µs, on every webhook request.
_DIGITS_AS_ZEROS = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))


class NumberText(str):
    """A JSON number with a fraction or an exponent, as it is written in the document."""

    __slots__ = ()


def loads_exact(data: bytes | str, *, floats_as_text: bool = False) -> Any:
    """Parse JSON (raises ``orjson.JSONDecodeError``), integers exact at any length;
    with ``floats_as_text`` a number with a fraction or an exponent is its text
    (:class:`NumberText`: ``1234567890123456789.5``, ``1e2``), not a double."""
    document = orjson.loads(data)
    raw = data.encode() if isinstance(data, str) else data
    if not floats_as_text and raw.translate(_DIGITS_AS_ZEROS).find(_LONG_DIGITS) < 0:
        return document
    try:
        return json.loads(raw, parse_float=NumberText if floats_as_text else None)
    except RecursionError:
        # orjson takes 1024 levels, the standard library fewer: past its limit the
        # body is refused as orjson refuses a deeper one, not failed as a bug.
        msg = "nested too deeply to keep its numbers exact"
        raise orjson.JSONDecodeError(msg, raw.decode("utf-8", "replace"), 0) from None


def dumps_exact(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON as orjson writes it; integers beyond 64 bits (which orjson refuses)
    as the standard library writes them, every digit kept."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except orjson.JSONEncodeError:
        return json.dumps(
            value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False
        ).encode()
