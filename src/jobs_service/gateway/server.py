"""The gateway's uvicorn server: on SIGTERM it ends the run-event streams first.

uvicorn stops accepting connections and then waits, up to its graceful-shutdown timeout
(``worker.shutdown_timeout_s``), for the requests in progress. A run-event stream is a
request that lasts as long as its run: one open stream held every stop for the whole
timeout, and a container runtime's shorter grace period then killed the process with
its other requests. The streams end at once instead; browsers' and other EventSource
clients reconnect (to another gateway) and resume from their ``Last-Event-ID``.

After a stop uvicorn raises the signal it caught again, with its default action, so the
process ends at once: the log lines of the stop's last moments, which wait for the end
of an event-loop turn, are written out before that.

An application that fails to start (its database refuses the connection, say) raises
its error out of :meth:`GatewayServer.run`, for ``jobsctl`` to say in one line, instead
of uvicorn logging the traceback and exiting with 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.lifespan.on import LifespanOn

from jobs_service.core.logging import flush_logs
from jobs_service.gateway.run_feeds import RunFeeds

if TYPE_CHECKING:
    import socket
    from collections.abc import Generator
    from types import FrameType

    from uvicorn.lifespan.on import LifespanSendMessage

__all__ = ["GatewayServer", "end_event_streams"]


class GatewayServer(uvicorn.Server):
    """uvicorn's server, ending event streams when a stop begins."""

    _loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Note the loop the app runs on (the signal handler runs outside it); a start
        that fails raises the application's error."""
        self._loop = asyncio.get_running_loop()
        self.lifespan = _RaisingLifespan(self.config)
        await super().startup(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """uvicorn's, with the stop's log lines written out before the signal it caught
        is raised again (ending the process without ``atexit``)."""
        with super().capture_signals():
            try:
                yield
            finally:
                flush_logs()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Stop as uvicorn does, and end the event streams on the app's loop."""
        super().handle_exit(sig, frame)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(end_event_streams, self.config.app)


class _RaisingLifespan(LifespanOn):
    """uvicorn's lifespan, raising the application's start-up error from ``startup``
    instead of logging its traceback (uvicorn would then exit the process with 3)."""

    error: BaseException | None = None

    async def send(self, message: LifespanSendMessage) -> None:
        """Keep a failed start's error rather than its formatted traceback.

        Starlette sends ``lifespan.startup.failed`` from the ``except`` block around the
        application's lifespan: the error being handled there is the application's.
        """
        if message["type"] == "lifespan.startup.failed":
            error = sys.exc_info()[1]
            if error is not None:
                self.error = error
                message = {"type": "lifespan.startup.failed", "message": ""}
        await super().send(message)

    async def startup(self) -> None:
        """Start the application; raise its error if it failed."""
        await super().startup()
        if self.error is not None:
            raise self.error


def end_event_streams(app: Any) -> None:
    """End every run-event stream ``app`` serves (none if none was ever opened)."""
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    feeds = runtime.built("run-feeds") if runtime is not None else None
    if isinstance(feeds, RunFeeds):
        feeds.close_all()
