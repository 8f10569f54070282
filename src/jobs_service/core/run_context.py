"""The run a piece of code is executing on behalf of.

Set by the worker's run-context middleware before a task starts and cleared after it
ends; everything in between (the task, its agents, its log lines) can ask which run it
serves, e.g. to send the run id as an idempotency key.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from taskiq import TaskiqMessage

    from jobs_service.core.progress import Progress, ProgressSink

__all__ = ["RunContext", "clear_run", "context_from_labels", "current_run", "set_run"]

_current: ContextVar[RunContext | None] = ContextVar("jobs_current_run", default=None)


@dataclass(slots=True)
class RunContext:
    """What is known about a run while it executes.

    ``content`` is the markdown result a task hands over for delivery and history (its
    return value stays a count summary); ``delivered`` says the task delivered its
    result itself, so nothing has to deliver it afterwards.
    """

    run_id: str
    task: str
    kwargs: dict[str, Any]
    attempt: int
    source: str
    queued_at: datetime
    schedule_id: int | None = None
    scheduled_for: datetime | None = None
    webhook_event_id: int | None = None
    deliver_to: dict[str, Any] | None = None
    content: str | None = None
    delivered: bool = False
    retry_in_s: float | None = None
    exhausted: bool = False
    #: ``(result, outcome)``: how the attempt ended, decided once by the middlewares.
    outcome: tuple[Any, Any] | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_monotonic: float = field(default_factory=time.monotonic)
    #: The last progress this attempt reported (``Progress.document``); None if none.
    #: The run's final record carries it, so a finished run shows its final progress.
    progress: dict[str, Any] | None = None
    #: Where reports go while the run executes (the worker's progress writer); None
    #: outside a worker, where a report only updates ``progress``.
    progress_sink: ProgressSink | None = None

    #: When the task function returned (:meth:`end`); None while it runs.
    ended_monotonic: float | None = None
    finished_at: datetime | None = None

    def end(self) -> None:
        """Stamp the moment the task function returned (the first call counts).

        A worker frees the slot first and runs the attempt's bookkeeping after the next
        run's start (and whatever else is ready on its loop), so a duration read in the
        bookkeeping would count other runs' work: on a busy worker about half a
        millisecond a run, and as much as a whole CPU-bound start of another run.
        """
        if self.ended_monotonic is None:
            self.ended_monotonic = time.monotonic()
            self.finished_at = datetime.now(UTC)

    def elapsed_s(self) -> float:
        """Seconds the attempt has run: until :meth:`end`, or until now before it."""
        end = self.ended_monotonic if self.ended_monotonic is not None else time.monotonic()
        return end - self.started_monotonic

    def elapsed_ms(self) -> int:
        """:meth:`elapsed_s` in whole milliseconds."""
        return int(self.elapsed_s() * 1000)

    def record_progress(self, progress: Progress) -> None:
        """Keep ``progress`` as this attempt's latest and hand it to the sink."""
        self.progress = progress.document(self.attempt)
        if self.progress_sink is not None:
            self.progress_sink.report(self)


# Labels come from whoever produced the message. The worker reads them before it can
# settle the message (a middleware, or the record of a run no worker can start): raising
# there would leave the message pending forever, so a bad label is ignored.


def _optional_int(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _timestamp(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _json_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if not value or not isinstance(value, str):
        return None
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return decoded if isinstance(decoded, dict) else None


def context_from_labels(message: TaskiqMessage) -> RunContext:
    """Build the run context from a received message.

    Here, beside :class:`RunContext`, because both the worker's middlewares and its
    receiver (recording a run it cannot start) read a run from its message's labels.
    """
    labels = message.labels
    attempt = _optional_int(labels.get("attempt"))
    if attempt is None:  # TaskIQ's own retry middlewares count retries in `_retries`
        attempt = (_optional_int(labels.get("_retries")) or 0) + 1
    now = datetime.now(UTC)
    return RunContext(
        run_id=message.task_id,
        task=message.task_name,
        # A copy: TaskIQ later replaces the values in place with parsed objects (models),
        # which the run record could not store as JSON.
        kwargs=dict(message.kwargs),
        attempt=max(attempt, 1),
        source=str(labels.get("source") or "api"),
        queued_at=_timestamp(labels.get("queued_at")) or now,
        schedule_id=_optional_int(labels.get("schedule_id")),
        scheduled_for=_timestamp(labels.get("scheduled_for")),
        webhook_event_id=_optional_int(labels.get("webhook_event_id")),
        deliver_to=_json_object(labels.get("deliver_to")),
        started_at=now,
    )


def current_run() -> RunContext | None:
    """The run being executed in this context, if any."""
    return _current.get()


def set_run(context: RunContext) -> None:
    """Enter a run.

    TaskIQ runs each message in its own asyncio task, which has its own copy of the
    context, so setting (rather than token-resetting) cannot leak into other runs.
    """
    _current.set(context)


def clear_run() -> None:
    """Leave the current run."""
    _current.set(None)
