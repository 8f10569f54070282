"""The embedded scheduler of ``jobsctl run`` is started again after a failure."""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import TYPE_CHECKING

import pytest

from jobs_service.broker import broker
from jobs_service.core.logging import flush_logs
from jobs_service.gateway import app as gateway_app
from jobs_service.gateway import create_app
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.scheduler.source import JobsScheduler
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio


def _retry_in(line: str) -> float:
    """``retry_in_s`` of a log line, JSON or console."""
    found = re.search(r"retry_in_s\"?[:=]\s*([0-9.]+)", line)
    assert found is not None, line
    return float(found.group(1))


async def test_an_embedded_scheduler_that_fails_to_start_is_logged_and_started_again(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The embedded scheduler's first two starts fail (the database unreachable, say):
    the process serves on, each failure is logged with its cause, the third start
    succeeds, and shutdown still stops the runtime."""
    starts: list[float] = []
    running = asyncio.Event()
    startup = JobsScheduler.startup

    async def fail_twice(self: JobsScheduler) -> None:
        starts.append(asyncio.get_running_loop().time())
        if len(starts) <= 2:
            msg = "schedules unreachable"
            raise RuntimeError(msg)
        await startup(self)
        running.set()

    stopped: list[Runtime] = []
    stop = Runtime.stop

    async def note_stop(self: Runtime) -> None:
        stopped.append(self)
        await stop(self)

    monkeypatch.setattr(JobsScheduler, "startup", fail_twice)
    monkeypatch.setattr(Runtime, "stop", note_stop)
    monkeypatch.setattr(gateway_app, "SCHEDULER_RETRY_S", (0.05, 1.0))
    app = create_app(make_settings(), broker=broker, embedded=True, announce=False)
    async with serve_app(app) as client:
        assert (await client.get("/health")).status_code == 200
        await asyncio.wait_for(running.wait(), timeout=5)
        flush_logs()
        captured = capfd.readouterr()
    logged = (captured.out + captured.err).splitlines()
    failures = [line for line in logged if "scheduler-failed" in line]
    assert len(failures) == 2, logged
    assert all("schedules unreachable" in line for line in failures)
    # The wait before each new start doubles: 0.05 s, then 0.1 s.
    assert [_retry_in(line) for line in failures] == [0.05, 0.1], failures
    waits = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert waits[0] >= 0.05, waits
    assert waits[1] >= 0.1, waits
    assert len(stopped) == 1
