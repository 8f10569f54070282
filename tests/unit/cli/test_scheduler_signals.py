"""``jobsctl scheduler`` on SIGTERM: its shutdown runs to the end and the process exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest

from jobs_service.cli.serve import _until_terminated, exit_on_sigterm

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _sigterm_handler_restored() -> Iterator[None]:
    """The tests install handlers for this very process: put pytest's back after."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


async def _serve_then_stop(journal: list[str], running: asyncio.Event) -> None:
    """A loop that runs until cancelled, then takes a while to shut down."""
    try:
        running.set()
        await asyncio.Event().wait()
    finally:
        journal.append("shutting down")
        await asyncio.sleep(0.05)
        journal.append("stopped")


async def test_sigterm_cancels_the_loop_once_and_returns_after_its_shutdown() -> None:
    """Two SIGTERMs in a row: the loop is cancelled once, its shutdown is not cut
    short by the second, and the call returns normally (the process then exits 0).
    Afterwards SIGTERM is ignored: the process is exiting, and a late one must not turn
    the clean stop into a kill (the interpreter's exit restores the default action for
    a handler it knows, not for an ignored signal)."""
    journal: list[str] = []
    running = asyncio.Event()
    serving = asyncio.create_task(_until_terminated(_serve_then_stop(journal, running)))
    await running.wait()
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.01)  # the shutdown has begun
    os.kill(os.getpid(), signal.SIGTERM)
    await serving  # returns: no CancelledError
    assert journal == ["shutting down", "stopped"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


async def test_a_cancellation_from_elsewhere_is_not_taken_for_a_sigterm() -> None:
    """Ctrl-C cancels the main task from outside: that goes on as a cancellation (the
    command exits 130), after the loop's shutdown."""
    journal: list[str] = []
    running = asyncio.Event()
    serving = asyncio.create_task(_until_terminated(_serve_then_stop(journal, running)))
    await running.wait()
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert journal == ["shutting down", "stopped"]


async def test_ctrl_c_after_a_sigterm_is_still_a_cancellation() -> None:
    """SIGTERM, then Ctrl-C while the loop shuts down: the command must exit 130, so the
    outer cancellation is not swallowed as the SIGTERM's."""
    journal: list[str] = []
    running = asyncio.Event()
    serving = asyncio.create_task(_until_terminated(_serve_then_stop(journal, running)))
    await running.wait()
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.01)
    assert journal == ["shutting down"]
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving


def test_sigterm_outside_the_event_loop_exits_0() -> None:
    """Before the loop takes SIGTERM over (start-up) a SIGTERM is a plain exit 0."""
    with pytest.raises(SystemExit) as exited:
        exit_on_sigterm(signal.SIGTERM, None)
    assert exited.value.code == 0
    # On its way out a second SIGTERM changes nothing (the interpreter's exit would
    # otherwise restore the default action, and that one would kill it: exit 143).
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
