"""Tasks used only by the benchmarks (loaded with JOBS_TASK_MODULES=benchmarks.tasks)."""

from __future__ import annotations

from jobs_service.broker import broker
from jobs_service.core.summary import Summary, make_summary


@broker.task(task_name="do_nothing", category="benchmark")
async def do_nothing(n: int = 0) -> Summary:
    """Return at once: measures the service's own per-run cost."""
    return make_summary(processed=1 if n >= 0 else 0)
