"""A process whose metrics port is taken logs it and runs on."""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING

import pytest

from jobs_service.cli.serve import _serve_metrics
from jobs_service.core.logging import configure_logging
from jobs_service.scheduler.metrics import serve_scheduler_metrics

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_taken_scheduler_metrics_port_is_one_error_line_not_a_crash(
    taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real metrics server cannot bind: the scheduler logs where and how to fix it."""
    configure_logging("json", "info")
    _serve_metrics("scheduler", "127.0.0.1", taken_port, serve_scheduler_metrics)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    [line] = [line for line in lines if line["event"] == "scheduler-metrics-unavailable"]
    assert line["address"] == f"127.0.0.1:{taken_port}"
    assert line["level"] == "error"
    assert "scheduler.metrics_port" in line["message"]
