"""Lifecycle lines written by the hot-path logger are the lines structlog writes."""

from __future__ import annotations

import gc
import json
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from jobs_service.core.logging import HotPathLogger, configure_logging, get_logger
from jobs_service.infrastructure.heap import YOUNG_THRESHOLD, settle_heap

if TYPE_CHECKING:
    import pytest


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]


def test_a_hot_path_line_has_the_fields_structlog_would_write(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Same keys and values as structlog's JSON line, context variables included."""
    configure_logging("json", "info")
    structlog.contextvars.bind_contextvars(run_id="r-1", task="sync_accounts")
    HotPathLogger("jobs_service.jobs").info("job-success", attempt=1, summary={"errors": 0})
    get_logger("jobs_service.jobs").info("job-success", attempt=1, summary={"errors": 0})
    fast, reference = _lines(capsys)
    assert fast.keys() == reference.keys()
    assert {k: v for k, v in fast.items() if k != "timestamp"} == {
        k: v for k, v in reference.items() if k != "timestamp"
    }
    stamp = datetime.fromisoformat(str(fast["timestamp"]).replace("Z", "+00:00"))
    reference_stamp = datetime.fromisoformat(str(reference["timestamp"]).replace("Z", "+00:00"))
    assert abs((reference_stamp - stamp).total_seconds()) < 1


def test_levels_below_the_configured_one_are_not_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """At warning level, info lines vanish and warnings stay."""
    configure_logging("json", "warning")
    log = HotPathLogger("jobs_service.jobs")
    log.info("job-start")
    log.warning("job-retry", retry_in_s=2.0)
    lines = _lines(capsys)
    configure_logging("json", "info")
    assert [line["event"] for line in lines] == ["job-retry"]
    assert lines[0]["level"] == "warning"


def test_on_a_console_the_line_goes_through_structlog(capsys: pytest.CaptureFixture[str]) -> None:
    """Console format: the readable renderer, not JSON."""
    configure_logging("console", "info")
    HotPathLogger("jobs_service.jobs").error("job-failed", error="boom")
    output = capsys.readouterr().err
    configure_logging("json", "info")
    assert "job-failed" in output
    assert not output.lstrip().startswith("{")


def test_settling_the_heap_freezes_what_exists_and_raises_the_young_threshold() -> None:
    """After start-up the collector no longer scans long-lived objects."""
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
