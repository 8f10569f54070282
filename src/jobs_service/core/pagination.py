"""Opaque cursors for keyset pagination.

A cursor is the last row id of a page, encoded so clients treat it as a token rather
than arithmetic; keyset pages stay stable while new rows arrive, unlike offsets.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["InvalidCursorError", "decode_cursor", "encode_cursor"]

_PREFIX = "c1:"
_MAX_ID = 2**63 - 1


class InvalidCursorError(ValueError):
    """The cursor was not produced by this service."""


def encode_cursor(last_id: int) -> str:
    """Encode the id the next page starts after."""
    return base64.urlsafe_b64encode(f"{_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Decode a cursor from :func:`encode_cursor`, or raise :class:`InvalidCursorError`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursorError(cursor) from exc
    digits = raw[len(_PREFIX) :]
    if not raw.startswith(_PREFIX) or not (digits.isascii() and digits.isdigit()):
        raise InvalidCursorError(cursor)
    if len(digits) > 19 or int(digits) > _MAX_ID:
        raise InvalidCursorError(cursor)
    return int(digits)
