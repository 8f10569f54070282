"""Tasks used only by the benchmarks (loaded with ``JOBS_TASK_MODULES=benchmarks.tasks``).

``bump_counter``, ``record_latency`` and ``sleep_then_count`` do exactly what their
plain TaskIQ twins in :mod:`benchmarks.plain_taskiq_app` do
(:mod:`benchmarks.task_bodies`), through a per-process client of ``JOBS_REDIS_URL``;
the difference is the service around them (run recording, lifecycle logs, retries,
metrics) and the count summary they return.
"""

from __future__ import annotations

import os

from benchmarks import task_bodies
from jobs_service.broker import broker
from jobs_service.core.summary import Summary, make_summary

_REDIS_URL = os.environ.get("JOBS_REDIS_URL", "redis://127.0.0.1:6379/0")
# Declared like a production task (the task contract's retry labels), so the retry
# middleware sees the same labels it would in production; these tasks never fail.
_MEASURED = {"category": "benchmark", "retry_on_error": True, "max_retries": 3}


@broker.task(task_name="do_nothing", category="benchmark")
async def do_nothing(n: int = 0) -> Summary:
    """Return at once: measures the service's own per-run cost."""
    return make_summary(processed=1 if n >= 0 else 0)


@broker.task(task_name="bump_counter", **_MEASURED)
async def bump_counter(key: str) -> Summary:
    """One Redis INCR on ``key``: the W1 no-op whose completion can be counted."""
    await task_bodies.bump_counter(task_bodies.redis(_REDIS_URL), key)
    return make_summary(processed=1)


@broker.task(task_name="record_latency", **_MEASURED)
async def record_latency(key: str, sent_at: float) -> Summary:
    """Append ``now - sent_at`` to the list ``key``: W2's enqueue-to-start latency."""
    await task_bodies.record_latency(task_bodies.redis(_REDIS_URL), key, sent_at)
    return make_summary(processed=1)


@broker.task(task_name="sleep_then_count", **_MEASURED)
async def sleep_then_count(key: str, seconds: float = 0.05) -> Summary:
    """Sleep ``seconds`` (a slot held without CPU), then INCR ``key``: W3's task."""
    await task_bodies.sleep_then_count(task_bodies.redis(_REDIS_URL), key, seconds)
    return make_summary(processed=1)
