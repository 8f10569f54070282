"""Tasks registered only in tests, loaded through ``JOBS_TASK_MODULES`` like a team's own.

They follow the same contract as built-in tasks (the registry test walks them too).
"""

from __future__ import annotations

import asyncio

from jobs_service.broker import broker
from jobs_service.core.errors import PermanentError, RetryLater
from jobs_service.core.progress import report_progress
from jobs_service.core.run_context import current_run
from jobs_service.core.summary import Summary, make_summary


@broker.task(task_name="count_items", category="testing")
async def count_items(items: list[str], fail_on: str | None = None) -> Summary:
    """Count items; count the ones equal to ``fail_on`` as errors."""
    errors = sum(1 for item in items if item == fail_on)
    return make_summary(processed=len(items) - errors, errors=errors)


@broker.task(task_name="fail_on_purpose", category="testing")
async def fail_on_purpose(reason: str = "boom") -> Summary:
    """Always raise, to exercise failure recording."""
    raise RuntimeError(reason)


@broker.task(task_name="sleep_for", category="testing", timeout=30)
async def sleep_for(seconds: float) -> Summary:
    """Sleep, then report one processed item."""
    await asyncio.sleep(seconds)
    return make_summary(processed=1)


@broker.task(task_name="return_garbage", category="testing")
async def return_garbage() -> Summary:
    """Break the summary contract on purpose."""
    return {"processed": "many"}  # type: ignore[dict-item]


@broker.task(task_name="count_awkwardly", category="testing")
async def count_awkwardly() -> Summary:
    """Return counts named like log fields."""
    return make_summary(attempt=3, event=1, duration_ms=5, task=2)


@broker.task(task_name="record_webhook", category="testing")
async def record_webhook(event_id: int) -> Summary:
    """Handle one webhook event (the tests route events here)."""
    return make_summary(events=1 if event_id > 0 else 0)


#: The gates ``hold_webhook`` runs wait at, by event id: a test sets one to let that
#: event's run end (until then it is running, as a slow handler would be).
WEBHOOK_GATES: dict[int, asyncio.Event] = {}


@broker.task(task_name="hold_webhook", category="testing")
async def hold_webhook(event_id: int) -> Summary:
    """Handle one webhook event once the test opens its gate."""
    await WEBHOOK_GATES.setdefault(event_id, asyncio.Event()).wait()
    return make_summary(events=1)


@broker.task(task_name="fail_until_attempt", category="testing", retry_on_error=True, max_retries=2)
async def fail_until_attempt(succeed_at: int, permanent: bool = False) -> Summary:
    """Fail (retryably, or permanently) until attempt ``succeed_at``."""
    run = current_run()
    attempt = run.attempt if run is not None else 1
    if permanent:
        raise PermanentError("the provider said 400")
    if attempt < succeed_at:
        raise RetryLater(f"attempt {attempt} is too early")
    return make_summary(processed=attempt)


@broker.task(task_name="report_steps", category="testing", timeout=60)
async def report_steps(steps: int, pause_s: float = 0.0, hold_s: float = 0.0) -> Summary:
    """Report progress after each of ``steps`` steps (``pause_s`` apart), then wait
    ``hold_s`` before finishing (so watchers see the last report before the end)."""
    for step in range(1, steps + 1):
        if pause_s:
            await asyncio.sleep(pause_s)
        await report_progress(step * 100 / steps, f"step {step} of {steps}")
    if hold_s:
        await asyncio.sleep(hold_s)
    return make_summary(processed=steps)
