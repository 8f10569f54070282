"""Label schedules become TaskIQ scheduled tasks that start runs with source=schedule."""

from __future__ import annotations

import pytest

from jobs_service.broker import broker
from jobs_service.scheduler import CronLabelSource

pytestmark = pytest.mark.anyio


async def test_every_label_schedule_is_a_scheduled_task() -> None:
    """One entry per (task, cron); runs are labelled as scheduled."""
    schedules = {item.schedule_id: item for item in await CronLabelSource(broker).get_schedules()}
    health = schedules["label:check_system_health:0"]
    assert health.cron == "*/5 * * * *"
    assert health.task_name == "check_system_health"
    assert health.labels["source"] == "schedule"
    assert "schedule" not in health.labels  # descriptive labels stay out of messages
    assert schedules["label:cleanup_old_runs:0"].cron == "17 3 * * *"
