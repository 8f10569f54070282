"""`report_progress`: the task-side port of run progress."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from taskiq import InMemoryBroker

from jobs_service.core.progress import (
    MAX_PROGRESS_MESSAGE,
    InvalidProgressError,
    Progress,
    report_progress,
)
from jobs_service.core.run_context import RunContext, clear_run, current_run, set_run
from jobs_service.infrastructure.progress import BrokerProgressSink

pytestmark = pytest.mark.anyio


class RecordingSink:
    """Keeps every document it is handed."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any] | None] = []

    def report(self, run: RunContext) -> None:
        self.reports.append(run.progress)


def _run(attempt: int = 2) -> RunContext:
    return RunContext(
        run_id="r" * 32,
        task="report_steps",
        kwargs={},
        attempt=attempt,
        source="api",
        queued_at=datetime.now(UTC),
    )


@pytest.fixture
def run() -> Any:
    context = _run()
    set_run(context)
    yield context
    clear_run()


@pytest.mark.parametrize(
    ("percent", "message", "complaint"),
    [
        (-0.5, "", "from 0 to 100, got -0.5"),
        (100.01, "", "from 0 to 100, got 100.01"),
        (math.nan, "", "from 0 to 100, got nan"),
        (math.inf, "", "from 0 to 100"),
        (True, "", "not bool"),
        ("50", "", "not str"),
        (50, None, "message must be a string, not NoneType"),
        (50, "x" * (MAX_PROGRESS_MESSAGE + 1), f"at most {MAX_PROGRESS_MESSAGE}"),
    ],
)
async def test_bad_reports_are_refused_with_a_clear_error_inside_and_outside_a_run(
    percent: Any, message: Any, complaint: str
) -> None:
    """Out of range, not a number, a boolean, a long or non-text message: a ValueError
    saying what is wrong, whether or not a run executes."""
    with pytest.raises(InvalidProgressError, match=complaint):
        await report_progress(percent, message)
    set_run(_run())
    try:
        with pytest.raises(InvalidProgressError, match=complaint):
            await report_progress(percent, message)
        run = current_run()
        assert run is not None
        assert run.progress is None  # a refused report changes nothing
    finally:
        clear_run()


async def test_outside_a_run_a_valid_report_does_nothing() -> None:
    """A task function called directly (as its unit tests do) may report freely."""
    await report_progress(0)
    await report_progress(100, "x" * MAX_PROGRESS_MESSAGE)
    assert current_run() is None


async def test_a_report_becomes_the_runs_progress_and_goes_to_its_sink(run: RunContext) -> None:
    """Each report replaces the run's progress (with the attempt and a timestamp) and is
    handed to the sink; whole numbers stay whole, fractions are rounded."""
    sink = RecordingSink()
    run.progress_sink = sink
    await report_progress(12.3456, "reading")
    await report_progress(40, "page 4 of 10")
    assert run.progress is not None
    assert (run.progress["percent"], run.progress["message"]) == (40, "page 4 of 10")
    assert run.progress["attempt"] == 2
    assert datetime.fromisoformat(run.progress["at"]).tzinfo is not None
    assert [report["percent"] for report in sink.reports if report] == [12.35, 40]


async def test_a_worker_sink_that_cannot_write_never_fails_the_task(run: RunContext) -> None:
    """No runtime attached to the broker (nothing to write with): the report is logged
    and dropped by the sink, the task goes on, and the run still keeps the value."""
    run.progress_sink = BrokerProgressSink(InMemoryBroker())
    await report_progress(75, "almost")
    assert run.progress is not None
    assert run.progress["percent"] == 75


def test_progress_documents_are_json_ready() -> None:
    """The stored document: percent, message, ISO time, attempt."""
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert Progress(50, "half").document(3, at) == {
        "percent": 50,
        "message": "half",
        "at": "2026-01-02T03:04:05+00:00",
        "attempt": 3,
    }
