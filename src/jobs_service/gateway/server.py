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
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import uvicorn

from jobs_service.core.logging import flush_logs
from jobs_service.gateway.run_feeds import RunFeeds

if TYPE_CHECKING:
    import socket
    from collections.abc import Generator
    from types import FrameType

__all__ = ["GatewayServer", "end_event_streams"]


class GatewayServer(uvicorn.Server):
    """uvicorn's server, ending event streams when a stop begins."""

    _loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Note the loop the app runs on (the signal handler runs outside it)."""
        self._loop = asyncio.get_running_loop()
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


def end_event_streams(app: Any) -> None:
    """End every run-event stream ``app`` serves (none if none was ever opened)."""
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    feeds = runtime.built("run-feeds") if runtime is not None else None
    if isinstance(feeds, RunFeeds):
        feeds.close_all()
