"""Reading and writing a sender's JSON without changing its numbers.

orjson, fast and strict, reads an integer beyond 64 bits as a float: two amounts that
differ only in their last digits become one number. A webhook body is the sender's
record, so what is read from it (an event id, the body shown or handed to a task) must
keep every digit. Integers that long need 19 digits or more, so a body without 19
digits in a row is read by orjson as is; one with them is read again by the standard
library, whose integers are exact (after orjson, so the strict checks still apply:
``NaN``, lone surrogates, numbers out of a double's range stay malformed).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["dumps_exact", "loads_exact"]

#: The shortest run of digits whose integer may not fit 64 bits (below -2**63 or
#: above 2**64 - 1).
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def loads_exact(data: bytes | str) -> Any:
    """Parse JSON (raises ``orjson.JSONDecodeError``), integers exact at any length."""
    document = orjson.loads(data)
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw) is None:
        return document
    return json.loads(raw)


def dumps_exact(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON as orjson writes it; integers beyond 64 bits (which orjson refuses)
    as the standard library writes them, every digit kept."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except orjson.JSONEncodeError:
        return json.dumps(
            value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False
        ).encode()
