"""The count-summary contract."""

from __future__ import annotations

import pytest

from jobs_service.core.summary import InvalidSummaryError, make_summary, validate_summary


def test_make_summary_always_has_errors() -> None:
    """errors defaults to zero."""
    assert make_summary(checked=3) == {"checked": 3, "errors": 0}
    assert make_summary(checked=3, errors=1) == {"checked": 3, "errors": 1}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1, 2], "got list"),
        ({"checked": 1}, "no 'errors'"),
        ({"errors": "2"}, "must be an int"),
        ({"errors": True}, "must be an int"),
        ({"errors": -1}, "negative"),
        ({1: 2, "errors": 0}, "keys must be strings"),
    ],
)
def test_invalid_summaries_say_what_is_wrong(value: object, message: str) -> None:
    """Anything but non-negative int counts with an errors key is refused."""
    with pytest.raises(InvalidSummaryError, match=message):
        validate_summary(value)
