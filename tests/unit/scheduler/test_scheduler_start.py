"""A scheduler whose start fails stops what it had started."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from taskiq import InMemoryBroker

from jobs_service.core.settings import Settings
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.scheduler import source as scheduler_source
from jobs_service.scheduler.source import JobsScheduler

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.anyio


async def test_a_start_that_fails_stops_the_runtime_and_the_broker_it_started(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler process of its own starts its broker and a runtime, then fails while
    syncing label schedules (or is stopped by SIGTERM there): both are stopped again
    before the error goes on, so no connection is left open to be dropped at exit."""
    settings = make_settings()
    journal: list[str] = []

    def load(cls: type[Settings], *args: Any, **kwargs: Any) -> Settings:
        del cls, args, kwargs
        return settings

    async def unreadable(*args: Any, **kwargs: Any) -> None:
        del args, kwargs
        journal.append("sync labels")
        msg = "label schedules unreadable"
        raise RuntimeError(msg)

    start, stop = Runtime.start, Runtime.stop

    async def note_start(self: Runtime) -> None:
        journal.append("start runtime")
        await start(self)

    async def note_stop(self: Runtime) -> None:
        journal.append("stop runtime")
        await stop(self)

    broker = InMemoryBroker()
    broker_startup, broker_shutdown = broker.startup, broker.shutdown

    async def note_broker_start() -> None:
        journal.append("start broker")
        await broker_startup()

    async def note_broker_stop() -> None:
        journal.append("stop broker")
        await broker_shutdown()

    monkeypatch.setattr(Settings, "load", classmethod(load))
    monkeypatch.setattr(scheduler_source, "configure_logging", lambda *args: None)
    monkeypatch.setattr(scheduler_source, "sync_label_schedules", unreadable)
    monkeypatch.setattr(Runtime, "start", note_start)
    monkeypatch.setattr(Runtime, "stop", note_stop)
    monkeypatch.setattr(broker, "startup", note_broker_start)
    monkeypatch.setattr(broker, "shutdown", note_broker_stop)

    with pytest.raises(RuntimeError, match="label schedules unreadable"):
        await JobsScheduler(broker).startup()
    assert journal == [
        "start broker",
        "start runtime",
        "sync labels",
        "stop runtime",
        "stop broker",
    ]
