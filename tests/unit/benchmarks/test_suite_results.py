"""Only a full benchmark run replaces the kept results the performance page describes."""

from __future__ import annotations

import pytest

from benchmarks.suite import FULL_REPEAT, WORKLOADS, results_name
from benchmarks.verdicts import Row

EVERY = [workload.key for workload in WORKLOADS]
PASSED = [Row("W1", "3x", "TaskIQ", ">= 2x", "PASS"), Row("W2", "1 ms", "1 ms", "<=", "FAIL")]


def test_a_full_run_replaces_latest_whatever_its_verdicts() -> None:
    assert results_name(quick=False, selected=EVERY, repeat=FULL_REPEAT, rows=PASSED) == "latest"


@pytest.mark.parametrize(
    ("quick", "selected", "repeat", "verdict"),
    [
        (True, EVERY, FULL_REPEAT, "PASS"),  # a smoke run
        (False, EVERY[:2], FULL_REPEAT, "PASS"),  # some workloads
        (False, [EVERY[0]] * len(EVERY), FULL_REPEAT, "PASS"),  # as many, not all
        (False, EVERY, 1, "PASS"),  # fewer repetitions
        (False, EVERY, FULL_REPEAT, "SKIPPED"),  # the budget ran out
        (False, EVERY, FULL_REPEAT, "ERROR"),  # a workload produced nothing
    ],
)
def test_any_other_run_goes_to_scratch(
    quick: bool, selected: list[str], repeat: int, verdict: str
) -> None:
    rows = [*PASSED, Row("W3", "-", "-", "-", verdict)]
    assert results_name(quick=quick, selected=selected, repeat=repeat, rows=rows) == "scratch"
