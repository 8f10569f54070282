"""Tasks for the failure suite: each records its effect in Redis when it completes.

The count of effects per run is what "duplicated effects" means in ``make chaos``: a
run whose effect landed twice did its work twice.
"""

from __future__ import annotations

import asyncio
import os

from redis.asyncio import Redis

from jobs_service.broker import broker
from jobs_service.core.run_context import current_run
from jobs_service.core.summary import Summary, make_summary


def effects_key(prefix: str | None = None) -> str:
    """The Redis hash of effects: run id → how many times the work completed."""
    return f"{prefix or os.environ.get('JOBS_REDIS_PREFIX', 'jobs')}:chaos:effects"


@broker.task(task_name="apply_effect", category="testing", timeout=600)
async def apply_effect(seconds: float = 0.0) -> Summary:
    """Work for ``seconds``, then record one effect for this run."""
    await asyncio.sleep(seconds)
    run = current_run()
    async with Redis.from_url(os.environ["JOBS_REDIS_URL"]) as redis:
        await redis.hincrby(effects_key(), run.run_id if run else "unknown", 1)
    return make_summary(processed=1)
