"""Live state of watched runs, for ``GET /v1/runs/{run_id}/events``.

The gateway learns a run's changes by reading its row, not from the workers: a worker
publishing every state change would put a Redis round trip on every run, watched or
not, and the hot path is the product (see the performance page). Reading costs only
what is watched: every ``events_poll_interval_ms`` one narrow ``SELECT`` reads all the
runs this gateway process watches (each run once, however many clients watch it: a
:class:`RunFeed` per run), and polling stops when nobody watches. What the stream shows
lags the worker by at most the recorder's flush interval plus one poll (progress: the
progress writer's interval).

A feed publishes a new :class:`RunState` only when something a watcher sees changed;
each client turns states into events (:mod:`~jobs_service.gateway.run_events`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.background import start_detached, stop_task
from jobs_service.infrastructure.models import TERMINAL_STATUSES
from jobs_service.infrastructure.repositories.run_progress import read_live_states

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from datetime import datetime

    from jobs_service.infrastructure.database import Database
    from jobs_service.infrastructure.models import JobRun

__all__ = ["RunFeed", "RunFeeds", "RunState"]

_log = get_logger("jobs_service.gateway.run_feeds")
_MAX_BACKOFF_S = 5.0


@dataclass(frozen=True, slots=True)
class RunState:
    """What a watcher of a run sees; equal states mean nothing to tell."""

    run_id: str
    status: str
    attempt: int
    progress: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    summary: dict[str, int] | None
    error: dict[str, str] | None

    @classmethod
    def of(cls, row: JobRun | Any) -> RunState:
        """From a run row (an ORM object or a row of ``LIVE_COLUMNS``)."""
        return cls(
            run_id=row.run_id,
            status=row.status,
            attempt=row.attempt,
            progress=row.progress,
            started_at=row.started_at,
            finished_at=row.finished_at,
            duration_ms=row.duration_ms,
            summary=row.summary,
            error=row.error,
        )

    @property
    def terminal(self) -> bool:
        """True once the run has ended (succeeded, failed, dead or cancelled)."""
        return self.status in TERMINAL_STATUSES


class RunFeed:
    """The latest state of one run and a way to wait for the next one.

    ``state`` is None once the run no longer exists (deleted by the retention cleanup).
    """

    def __init__(self, state: RunState) -> None:
        self.state: RunState | None = state
        #: Bumped on every published state, so a watcher knows what it has seen.
        self.version = 0
        self.watchers = 0
        #: The gateway is stopping: watchers end their streams (clients reconnect to
        #: another gateway, resuming from their Last-Event-ID).
        self.closed = False
        self._changed = asyncio.Event()

    def publish(self, state: RunState | None) -> None:
        """Make ``state`` the latest and wake every waiting watcher."""
        self.state = state
        self.version += 1
        self._wake()

    def close(self) -> None:
        """Wake every watcher to end its stream."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_newer(self, seen: int, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a version newer than ``seen`` (or the feed's
        closing); False on timeout."""
        if self.version != seen or self.closed:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        return self.version != seen or self.closed

    @property
    def finished(self) -> bool:
        """Nothing more will be published: the run ended or is gone."""
        return self.state is None or self.state.terminal


class RunFeeds:
    """The feeds of every run some client of this gateway process watches, and the one
    task that polls them."""

    def __init__(self, database: Database, *, poll_interval_s: float) -> None:
        self._database = database
        self._interval = poll_interval_s
        self._feeds: dict[str, RunFeed] = {}
        self._poller: asyncio.Task[None] | None = None
        #: Set when the last watcher leaves: wakes the poller from its rest to end.
        self._unwatched = asyncio.Event()
        self._closing = False

    @property
    def watched(self) -> int:
        """Runs with at least one watcher (read at every poll)."""
        return len(self._feeds)

    @property
    def polling(self) -> bool:
        """Whether the poller runs (only while some unfinished run is watched)."""
        return self._poller is not None and not self._poller.done()

    @contextlib.asynccontextmanager
    async def watch(self, run_id: str, current: RunState) -> AsyncIterator[RunFeed]:
        """Join the feed of ``run_id`` (starting it from ``current``, the state the
        caller just read, if nobody watches the run yet) until the block ends."""
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = RunFeed(current)
            if self._closing:  # the gateway is stopping: the current state, then the end
                feed.close()
            elif not feed.finished:
                self._feeds[run_id] = feed
                self._unwatched.clear()
                if not self.polling:
                    self._poller = start_detached(self._poll(), name="run-feeds")
        feed.watchers += 1
        try:
            yield feed
        finally:
            feed.watchers -= 1
            if feed.watchers == 0 and self._feeds.get(run_id) is feed:
                del self._feeds[run_id]
            if not self._feeds:
                # The poller ends by itself: at once if it rests, after its read if it
                # reads. Cancelling it mid-read would tear down its database connection
                # (asyncpg drops a connection whose query was interrupted).
                self._unwatched.set()

    async def _poll(self) -> None:
        delay = self._interval
        while self._feeds:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._unwatched.wait(), delay)
            run_ids = list(self._feeds)
            if not run_ids:  # the last watcher left while it rested
                return
            try:
                async with self._database.sessions() as session:
                    rows = await read_live_states(session, run_ids)
            except Exception as exc:  # noqa: BLE001 - an outage pauses the feeds, no more
                delay = min(delay * 2, _MAX_BACKOFF_S)
                _log.warning(
                    "run-feed-read-failed",
                    runs=len(run_ids),
                    error_type=type(exc).__name__,
                    error=str(exc)[:300],
                    retry_in_s=delay,
                )
                continue
            delay = self._interval
            for run_id in run_ids:
                feed = self._feeds.get(run_id)
                if feed is None:  # its last watcher left during the read
                    continue
                row = rows.get(run_id)
                state = None if row is None else RunState.of(row)
                if state != feed.state:
                    feed.publish(state)
                if feed.finished:
                    # Ended: a later watcher starts a new feed from what it reads itself.
                    del self._feeds[run_id]

    def close_all(self) -> None:
        """End every stream (the gateway received SIGTERM): a stream would otherwise
        hold the stop for the whole graceful-shutdown timeout."""
        self._closing = True
        for feed in self._feeds.values():
            feed.close()

    async def aclose(self, *, read_timeout_s: float = 5.0) -> None:
        """Stop polling (the gateway is shutting down): a read under way may finish
        (for up to ``read_timeout_s``) before the poller is cancelled."""
        self._feeds = {}
        self._unwatched.set()
        poller, self._poller = self._poller, None
        try:
            if poller is not None and not poller.done():
                await asyncio.wait({poller}, timeout=read_timeout_s)
        finally:  # also when the shutdown itself is cancelled: no poller outlives it
            await stop_task(poller)
