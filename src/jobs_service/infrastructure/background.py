"""Background loops of a process (lease renewal, heartbeats, delayed moves, feeds).

One shape for all of them: a step repeated every few seconds that logs and carries on
when it fails (a Redis restart must not end it), and a stop that cancels and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from jobs_service.core.logging import get_logger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["run_every", "stop_task"]

_log = get_logger("jobs_service.background")


def run_every(
    name: str, interval_s: float, step: Callable[[], Awaitable[Any]]
) -> asyncio.Task[None]:
    """Run ``step`` now and then every ``interval_s`` until the task is cancelled."""

    async def loop() -> None:
        while True:
            try:
                await step()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one failure
                _log.warning("background-step-failed", loop=name, error=str(exc)[:300])
            await asyncio.sleep(interval_s)

    return asyncio.get_running_loop().create_task(loop(), name=name)


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
