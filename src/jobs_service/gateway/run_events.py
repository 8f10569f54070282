"""A run's Server-Sent Events stream: its status and progress as they change.

The stream is state, not a log: it starts with the run's current status (and progress,
if any), then sends an event each time either changes, and ends with the final status
event. A client that reconnects therefore loses nothing by starting over, which is why
ids need not be replayable: they count the events of one stream (continuing from the
``Last-Event-ID`` a reconnecting client sends, so they only grow for it), except the
final status event's id, which is ``end``. EventSource reconnects whenever a stream
closes, even after the end; a reconnect carrying ``Last-Event-ID: end`` to a finished run
is answered ``204 No Content``, which tells EventSource to stop.

Plain ``StreamingResponse`` rather than a dependency (sse-starlette): the format is a
few lines, and the features that package adds (its own ping task, shutdown handling)
are covered by the heartbeat comments here and uvicorn's graceful-shutdown timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from jobs_service.gateway.run_feeds import RunFeeds, RunState

__all__ = [
    "END_ID",
    "HEARTBEAT",
    "ChangeTracker",
    "event_stream",
    "first_id",
    "format_event",
    "status_data",
]

END_ID = "end"
#: A comment line: ignored by clients, keeps proxies from timing the stream out, and
#: lets the server notice a client that left (the write fails).
HEARTBEAT = b": keep-alive\n\n"


def format_event(event: str, data: dict[str, Any], event_id: str) -> bytes:
    """One SSE event; the JSON is a single line, so one ``data:`` field holds it."""
    return b"id: %b\nevent: %b\ndata: %b\n\n" % (
        event_id.encode(),
        event.encode(),
        orjson.dumps(data),
    )


def status_data(state: RunState) -> dict[str, Any]:
    """The ``status`` event's data: status and attempt, and the outcome once ended."""
    return {
        "run_id": state.run_id,
        "status": state.status,
        "attempt": state.attempt,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "duration_ms": state.duration_ms,
        "summary": state.summary,
        "error": state.error,
    }


def first_id(last_event_id: str | None) -> int:
    """Where a stream's ids start: after the client's last one if it is a number."""
    if last_event_id and last_event_id.isascii() and last_event_id.isdigit():
        return min(int(last_event_id), 2**53)
    return 0


class ChangeTracker:
    """Turns successive states of a run into the events a watcher has not seen: the
    status (with the attempt) and the progress, each only when it changed. The status
    comes first, except the final one, which comes last."""

    def __init__(self) -> None:
        self._status: tuple[str, int] | None = None
        self._progress: dict[str, Any] | None = None

    def changes(self, state: RunState) -> list[tuple[str, dict[str, Any]]]:
        """``(event, data)`` pairs, in the order to send them."""
        events: list[tuple[str, dict[str, Any]]] = []
        if state.progress is not None and state.progress != self._progress:
            self._progress = state.progress
            events.append(("progress", {"run_id": state.run_id, **state.progress}))
        if (state.status, state.attempt) != self._status:
            self._status = (state.status, state.attempt)
            status = ("status", status_data(state))
            if state.terminal:
                events.append(status)
            else:
                events.insert(0, status)
        return events


async def event_stream(
    feeds: RunFeeds,
    current: RunState,
    *,
    heartbeat_s: float,
    retry_ms: int,
    last_event_id: str | None = None,
) -> AsyncIterator[bytes]:
    """The events of the run ``current`` describes, until it ends (or disappears)."""
    counter = first_id(last_event_id)
    tracker = ChangeTracker()
    async with feeds.watch(current.run_id, current) as feed:
        yield b"retry: %d\n\n" % retry_ms
        seen = -1
        while True:
            if not await feed.wait_newer(seen, heartbeat_s):
                yield HEARTBEAT
                continue
            seen = feed.version
            state = feed.state
            if state is None:  # deleted meanwhile: nothing more will happen
                return
            chunks = []
            for event, data in tracker.changes(state):
                counter += 1
                final = event == "status" and state.terminal
                chunks.append(format_event(event, data, END_ID if final else str(counter)))
            if chunks:
                yield b"".join(chunks)
            if state.terminal:
                return
            if feed.closed:  # the gateway stops; the client reconnects with Last-Event-ID
                return
