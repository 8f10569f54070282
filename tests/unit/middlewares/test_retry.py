"""Retries: backoff bounds, retrying/dead/failed outcomes, one run id across attempts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from jobs_service.middlewares.retry import retry_delay_s
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.core.settings import Settings


def test_backoff_doubles_with_jitter_and_stops_at_the_cap() -> None:
    for attempt, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)):
        delays = [retry_delay_s(attempt, base_s=2, cap_s=60, retry_after=None) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays), attempt
        assert len(set(delays)) > 150  # jittered, so retries of many runs spread out


def test_retry_after_is_a_floor_even_beyond_the_cap() -> None:
    assert retry_delay_s(1, base_s=2, cap_s=60, retry_after=30) == 30
    assert retry_delay_s(1, base_s=2, cap_s=60, retry_after=600) == 600
    assert retry_delay_s(5, base_s=2, cap_s=60, retry_after=0.5) >= 15


async def _final(app: object, run_id: str, *, statuses: tuple[str, ...]) -> dict[str, object]:
    client = app.state.client  # type: ignore[attr-defined]
    with anyio.fail_after(10):
        while True:
            await broker.wait_all()  # type: ignore[attr-defined]
            await app.state.runtime.recorder.wait_flushed()  # type: ignore[attr-defined]
            run = await client.get_run(run_id)
            if run is not None and run.status in statuses:
                return {"status": run.status, "attempt": run.attempt, "error": run.error}
            await anyio.sleep(0.02)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"succeed_at": 2}, ("succeeded", 2, None)),
        ({"succeed_at": 9}, ("dead", 3, "RetryLater")),  # max_retries=2: three attempts
        ({"succeed_at": 1, "permanent": True}, ("failed", 1, "PermanentError")),
    ],
)
async def test_a_retried_run_keeps_its_id_and_ends_succeeded_dead_or_failed(
    make_settings: Callable[..., Settings],
    kwargs: dict[str, object],
    expected: tuple[str, int, str | None],
) -> None:
    settings = make_settings(worker={"retry_backoff_s": 0.02, "retry_backoff_max_s": 0.1})
    app = create_app(settings, broker=broker, embedded=True, scheduler=False)
    async with serve_app(app):
        run_id = await app.state.client.enqueue("fail_until_attempt", kwargs)
        final = await _final(app, run_id, statuses=("succeeded", "dead", "failed"))
    error = final["error"]
    assert (final["status"], final["attempt"], error and error["type"]) == expected  # type: ignore[index]


def test_labels_a_producer_got_wrong_do_not_stop_the_run() -> None:
    """A bad label must not raise in a middleware: that would leave the message unacked."""
    from taskiq import TaskiqMessage  # noqa: PLC0415

    from jobs_service.middlewares.run_context import context_from_labels  # noqa: PLC0415

    message = TaskiqMessage(
        task_id="r1",
        task_name="count_items",
        labels={"attempt": "x", "queued_at": "yesterday", "schedule_id": "n/a", "_retries": "?"},
        args=[],
        kwargs={},
    )
    context = context_from_labels(message)
    assert (context.attempt, context.schedule_id) == (1, None)
    assert context.queued_at is not None
