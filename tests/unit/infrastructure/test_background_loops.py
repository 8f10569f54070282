"""Background loops stop when asked, even when what a step awaits mishandles the
cancellation: a worker's or gateway's shutdown waits for every one of its loops."""

from __future__ import annotations

import asyncio

import pytest

from jobs_service.infrastructure.background import run_every, stop_task

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the loops are asyncio tasks


async def _stopped_within(task: asyncio.Task[None], seconds: float) -> bool:
    """Whether ``stop_task`` returns within ``seconds`` (the stop is never cancelled
    from outside: that would cancel the loop itself and prove nothing)."""
    stopper = asyncio.ensure_future(stop_task(task))
    done, _ = await asyncio.wait({stopper}, timeout=seconds)
    if not done:
        stopper.cancel()
    return bool(done)


async def test_a_step_that_turns_the_stop_into_an_error_still_stops() -> None:
    """A library that answers a cancellation with an error of its own (a timeout that
    takes it for its expiry): the loop logged it as a failed step and went on, and the
    stop waited for ever."""
    started = asyncio.Event()
    steps = 0

    async def step() -> None:
        nonlocal steps
        steps += 1
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise TimeoutError("the client's own timeout") from None

    task = run_every("converting", 0.01, step)
    await started.wait()
    assert await _stopped_within(task, 4)
    assert task.cancelled()
    assert steps == 1


async def test_a_step_that_swallows_the_stop_is_cancelled_again() -> None:
    """A step that catches the cancellation and returns: the next cancel, a second
    later, ends the loop at its sleep."""
    swallowed = asyncio.Event()

    async def step() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            swallowed.set()

    task = run_every("swallowing", 30, step)
    await asyncio.sleep(0.05)
    assert await _stopped_within(task, 4)
    assert swallowed.is_set()
    assert task.cancelled()


async def test_a_failing_step_does_not_end_the_loop() -> None:
    """Failures that are not a stop are logged and the loop carries on."""
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("redis restarting")

    task = run_every("failing", 0.01, step)
    await asyncio.sleep(0.2)
    assert not task.done()
    await stop_task(task)
    assert calls >= 3
