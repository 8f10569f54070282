"""Every ended attempt is counted under its status, and its duration observed."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import REGISTRY

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _finish(client: httpx.AsyncClient, task: str, kwargs: dict[str, Any]) -> str:
    run_id = (await client.post(f"/v1/tasks/{task}", json={"kwargs": kwargs})).json()["run_id"]
    for _ in range(200):
        status = str((await client.get(f"/v1/runs/{run_id}")).json()["status"])
        if status in ("succeeded", "failed", "dead"):
            return status
        await asyncio.sleep(0.01)
    msg = f"run {run_id} did not end"
    raise AssertionError(msg)


async def test_succeeded_and_failed_runs_are_counted_with_their_durations(
    make_settings: Callable[..., Settings],
) -> None:
    """One success and one failure move their own counters and the duration count."""
    succeeded = _value("jobs_runs_total", task="count_items", status="succeeded")
    failed = _value("jobs_runs_total", task="fail_on_purpose", status="failed")
    durations = _value("jobs_run_duration_seconds_count", task="count_items")
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        assert await _finish(client, "count_items", {"items": ["a"]}) == "succeeded"
        assert await _finish(client, "fail_on_purpose", {}) == "failed"
    assert _value("jobs_runs_total", task="count_items", status="succeeded") == succeeded + 1
    assert _value("jobs_runs_total", task="fail_on_purpose", status="failed") == failed + 1
    assert _value("jobs_run_duration_seconds_count", task="count_items") == durations + 1


async def test_retries_and_dead_runs_have_families_of_their_own(
    make_settings: Callable[..., Settings],
) -> None:
    """A run that fails all three allowed attempts: two retries, then one dead run."""
    retries = _value("jobs_run_retries_total", task="fail_until_attempt")
    dead = _value("jobs_dead_runs_total", task="fail_until_attempt")
    settings = make_settings(worker={"retry_backoff_s": 0.01, "retry_backoff_max_s": 0.02})
    app = create_app(settings, broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        assert await _finish(client, "fail_until_attempt", {"succeed_at": 10}) == "dead"
    assert _value("jobs_run_retries_total", task="fail_until_attempt") == retries + 2
    assert _value("jobs_dead_runs_total", task="fail_until_attempt") == dead + 1
