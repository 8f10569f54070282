"""Arguments beyond what the calendar or the databases hold are usage errors (one line,
exit 2), not an OverflowError traceback from deep inside a query."""

from __future__ import annotations

import pytest

from jobs_service.cli.main import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["audit", "--since", "1000000d"], "'1000000d' reaches beyond the calendar"),
        (
            ["audit", "--since", "0001-01-01T00:00:00+05:00"],
            "'0001-01-01T00:00:00+05:00' reaches beyond the calendar",
        ),
        (["runs", "--limit", "99999999999999999999"], "is too large (at most 9223372036854775807)"),
        (["schedules", "show", "9223372036854775808"], "is too large"),
    ],
)
def test_out_of_range_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert message in error
    assert len(error.strip().splitlines()) == 1
