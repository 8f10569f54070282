"""Text every store keeps as it was given: no NUL characters, no lone surrogates.

PostgreSQL refuses a NUL character in ``text`` and ``jsonb`` (SQLite keeps it), and no
UTF-8 encoder takes a lone surrogate, so such a string would fail its statement — a 500
on PostgreSQL for what is the caller's mistake. Keyword arguments are checked with
:func:`unportable_text`; free-text fields of request bodies and query parameters are
:data:`PortableText`, which refuses the same values with the same error
(``unportable_value``, e.g. "text must not contain NUL characters").

Text that is nobody's mistake to refuse — what a task returns, an outside system
answers, an exception says — is made storable instead: :func:`portable` and
:func:`portable_values` replace each such character with U+FFFD, the replacement
character (``infrastructure.documents`` does so for everything it encodes).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

__all__ = [
    "REPLACEMENT_CHARACTER",
    "UNPORTABLE_VALUE",
    "PortableText",
    "portable",
    "portable_values",
    "unportable_text",
]

#: What :func:`portable` puts in place of a character no store keeps (U+FFFD).
REPLACEMENT_CHARACTER = "\ufffd"

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


def portable(value: str) -> str:
    """``value`` with each NUL character and lone surrogate replaced by U+FFFD."""
    if "\x00" in value:
        value = value.replace("\x00", REPLACEMENT_CHARACTER)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # UTF-16 passes surrogates through and its decoder pairs those that form
            # a character; a lone one becomes U+FFFD.
            value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def portable_values(value: Any) -> Any:
    """A JSON-like ``value`` with :func:`portable` applied to every string in it, the
    keys of objects included; other values are returned as they are."""
    if isinstance(value, str):
        return portable(value)
    if isinstance(value, dict):
        return {
            portable(key) if isinstance(key, str) else key: portable_values(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [portable_values(item) for item in value]
    return value
