"""Text every store keeps as it was given: no NUL characters, no lone surrogates.

PostgreSQL refuses a NUL character in ``text`` and ``jsonb`` (SQLite keeps it), and no
UTF-8 encoder takes a lone surrogate, so such a string would fail its statement — a 500
on PostgreSQL for what is the caller's mistake. Keyword arguments are checked with
:func:`unportable_text`; free-text fields of request bodies and query parameters are
:data:`PortableText`, which refuses the same values with the same error
(``unportable_value``, e.g. "text must not contain NUL characters").
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

__all__ = ["UNPORTABLE_VALUE", "PortableText", "unportable_text"]

#: The error type of a value the wire or a database would refuse or change.
UNPORTABLE_VALUE = "unportable_value"


def unportable_text(value: str) -> str | None:
    """Why a database would refuse ``value``, or None when every store keeps it."""
    if "\x00" in value:
        return "text must not contain NUL characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "text is not valid Unicode (lone surrogate)"
    return None


def _require_portable(value: str) -> str:
    problem = unportable_text(value)
    if problem is not None:
        raise PydanticCustomError(UNPORTABLE_VALUE, problem)
    return value


#: A string field that reaches the database: refused (422) when it holds a NUL character
#: or a lone surrogate.
PortableText = Annotated[str, AfterValidator(_require_portable)]
