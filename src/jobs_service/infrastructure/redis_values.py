"""Values as Redis clients return them: bytes without ``decode_responses``, str with it."""

from __future__ import annotations

__all__ = ["redis_text"]


def redis_text(value: object) -> str:
    """``value`` as text, whichever way the client was configured (numbers too)."""
    return value.decode() if isinstance(value, bytes) else str(value)
