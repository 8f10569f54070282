"""Background loops of a process (lease renewal, heartbeats, delayed moves, feeds).

One shape for all of them: a step repeated every few seconds that logs and carries on
when it fails (a Redis restart must not end it), and a stop that cancels and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import TYPE_CHECKING, Any, TypeVar

from jobs_service.core.logging import get_logger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

T = TypeVar("T")

__all__ = ["run_every", "start_detached", "stop_task"]

_log = get_logger("jobs_service.background")


def start_detached(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """A long-lived task in a context of its own.

    ``create_task`` copies the caller's context variables: a loop started lazily by the
    first run or request that needs it (the progress writer, a webhook's marks, run
    feeds) would otherwise log every later line with that run's ``run_id`` and
    ``task``, or that request's ``request_id``.
    """
    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())


def run_every(
    name: str, interval_s: float, step: Callable[[], Awaitable[Any]]
) -> asyncio.Task[None]:
    """Run ``step`` now and then every ``interval_s`` until the task is cancelled."""

    async def loop() -> None:
        this = asyncio.current_task()
        while True:
            try:
                await step()
            except Exception as exc:
                if this is not None and this.cancelling():
                    # A stop that what the step awaited turned into an error of its own (a
                    # client library's timeout taking the cancellation for its expiry):
                    # logging it and carrying on would make the stop wait for ever.
                    raise asyncio.CancelledError from exc
                _log.warning("background-step-failed", loop=name, error=str(exc)[:300])
            await asyncio.sleep(interval_s)

    return start_detached(loop(), name=name)


#: How long a stop waits before it cancels again a task that swallowed the cancellation.
_CANCEL_AGAIN_S = 1.0


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has ended.

    A task whose awaited call swallowed the cancellation (caught it and returned, as
    some clients' timeouts do when both happen at once) is cancelled again every
    second: a process's shutdown must not hang on one of its loops.
    """
    if task is None:
        return
    task.cancel()
    while not task.done():
        done, _ = await asyncio.wait({task}, timeout=_CANCEL_AGAIN_S)
        if not done:
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
