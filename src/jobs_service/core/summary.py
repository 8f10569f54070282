"""The count summary every job returns.

"Jobs orchestrate, they don't implement": a job's result is a handful of counts such as
``{"checked": 120, "processed": 118, "errors": 2}``. Keeping it to counts makes results
comparable across runs, cheap to store and safe to show in Teams or a dashboard.
"""

from __future__ import annotations

from typing import Any

__all__ = ["InvalidSummaryError", "Summary", "make_summary", "validate_summary"]

Summary = dict[str, int]


class InvalidSummaryError(TypeError):
    """A task returned something that is not a count summary."""


def make_summary(*, errors: int = 0, **counts: int) -> Summary:
    """Build a summary; ``errors`` is always present, zero unless given."""
    return validate_summary({**counts, "errors": errors})


def validate_summary(value: Any) -> Summary:
    """Return ``value`` if it is a count summary, else raise with what is wrong.

    Booleans are rejected although they are ints in Python: ``{"ok": True}`` is a flag,
    not a count, and would render as ``1`` on every dashboard.
    """
    if not isinstance(value, dict):
        msg = f"expected a count summary (dict of str to int), got {type(value).__name__}"
        raise InvalidSummaryError(msg)
    for key, count in value.items():
        if not isinstance(key, str):
            msg = f"summary keys must be strings, got {key!r}"
            raise InvalidSummaryError(msg)
        if isinstance(count, bool) or not isinstance(count, int):
            msg = f"summary value {key!r} must be an int count, got {type(count).__name__}"
            raise InvalidSummaryError(msg)
        if count < 0:
            msg = f"summary value {key!r} must not be negative, got {count}"
            raise InvalidSummaryError(msg)
    if "errors" not in value:
        msg = "summary has no 'errors' count (use make_summary(...) to build one)"
        raise InvalidSummaryError(msg)
    return value
