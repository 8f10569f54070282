"""Per-process resources shared by the gateway, the worker and the scheduler.

One ``Runtime`` is built from the settings at each process's entry (the gateway's
lifespan, which taskiq-fastapi also runs inside workers) and attached to the broker's
state, so TaskIQ middlewares and FastAPI routes use the same engine and recorder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast

from jobs_service.core.ids import process_name
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.queued_runs import QueuedRunWriter
from jobs_service.infrastructure.run_recorder import RunRecorder

if TYPE_CHECKING:
    from collections.abc import Callable

    from taskiq import AsyncBroker

    from jobs_service.core.settings import Settings

__all__ = ["Runtime", "runtime_of"]

T = TypeVar("T")


class Runtime:
    """Settings, database and run recorder of this process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = Database(settings.database_url, settings.database)
        self.recorder = RunRecorder(
            self.database,
            batch_size=settings.runs.record_batch_size,
            flush_interval_s=settings.runs.record_flush_interval_ms / 1000,
        )
        self._started = False
        self._resources: dict[str, Any] = {}

    @property
    def worker_name(self) -> str:
        """This process's name (:func:`~jobs_service.core.ids.process_name`), as run
        records, heartbeats and scheduler claims name it; read at use, as a worker
        process forked after the runtime was built has a name of its own."""
        return process_name()

    def resource(self, name: str, build: Callable[[], T]) -> T:
        """The process-wide ``name`` (an agent set, a client), built on first use.

        Built lazily so a process only opens the connections its tasks use; closed by
        :meth:`stop` when it has an ``aclose`` method.
        """
        if name not in self._resources:
            self._resources[name] = build()
        return cast("T", self._resources[name])

    def built(self, name: str) -> Any | None:
        """The resource ``name`` if some use built it, else None."""
        return self._resources.get(name)

    def queued_run_writer(self) -> QueuedRunWriter | None:
        """The shared writer of producers' keyless ``queued`` rows (PostgreSQL). None on
        SQLite, where each submit keeps its own short transaction."""
        if self.database.dialect != "postgresql":
            return None
        return self.resource("queued-run-writer", lambda: QueuedRunWriter(self.database))

    async def start(self) -> None:
        """Start background work (the recorder's flusher)."""
        if not self._started:
            await self.recorder.start()
            self._started = True

    async def stop(self) -> None:
        """Flush what is buffered and close connections."""
        if self._started:
            await self.recorder.stop()
            self._started = False
        resources, self._resources = self._resources, {}
        for resource in resources.values():
            close = getattr(resource, "aclose", None)
            if close is not None:
                await close()
        await self.database.close()


def runtime_of(broker: AsyncBroker) -> Runtime:
    """The runtime attached to ``broker``; a clear error when a process forgot to."""
    runtime = getattr(broker.state, "runtime", None)
    if not isinstance(runtime, Runtime):
        msg = "no Runtime attached to the broker: start it through jobsctl or the gateway"
        raise RuntimeError(msg)
    return runtime
