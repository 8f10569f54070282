"""The embedded process's /metrics: every family in one place, the in-memory queue read."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio


async def test_embedded_metrics_expose_every_family_and_the_in_memory_queue(
    make_settings: Callable[..., Settings],
) -> None:
    """`jobsctl run` is gateway, worker and scheduler at once: one endpoint has them all,
    and its queue (no Redis) reads as up with nothing ready."""
    app = create_app(make_settings(), broker=broker, embedded=True)  # with its scheduler
    async with serve_app(app) as client:
        response = await client.get("/metrics")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    assert {
        "jobs_runs",
        "jobs_run_duration_seconds",
        "jobs_run_retries",
        "jobs_dead_runs",
        "jobs_deliveries",
        "jobs_webhook_requests",
        "jobs_schedule_fires",
        "jobs_schedule_skips",
        "jobs_schedule_misses",
        "jobs_queue_up",
        "jobs_queue_depth",
        "jobs_queue_oldest_age_seconds",
        "jobs_sends_unconfirmed",
    } <= families.keys()
    [up] = families["jobs_queue_up"].samples
    assert (up.labels, up.value) == ({"queue": "in-memory"}, 1.0)
    depth = {s.labels["state"]: s.value for s in families["jobs_queue_depth"].samples}
    assert depth.keys() == {"ready", "pending", "delayed"}
    assert depth["ready"] == 0
