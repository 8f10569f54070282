"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field

from jobs_service.webhooks.exact_json import loads_exact

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jobs_service.infrastructure.models import (
        Delivery,
        JobRun,
        RunAttempt,
        Schedule,
        WebhookEvent,
    )
    from jobs_service.tasks.registry import TaskInfo

__all__ = [
    "AttemptOut",
    "BatchIn",
    "BatchOut",
    "FireTime",
    "Page",
    "ProgressOut",
    "ReplayOut",
    "RunActionOut",
    "RunOut",
    "RunStatus",
    "ScheduleChangeOut",
    "ScheduleDetailOut",
    "ScheduleOut",
    "SubmitIn",
    "SubmitOut",
    "TaskOut",
    "TriggerOut",
    "WebhookEventDetailOut",
    "WebhookEventOut",
]

#: Largest id a BIGINT holds; larger query values are a 422, not a database error.
MAX_ID = 2**63 - 1
#: Task names in filters: printable, no control characters (PostgreSQL rejects NUL).
NAME_PATTERN = r"^[A-Za-z0-9_.:#-]{1,200}$"

RunStatus = Literal["queued", "running", "succeeded", "failed", "retrying", "dead", "cancelled"]
RunSource = Literal["api", "schedule", "webhook", "retry", "cli"]
T = TypeVar("T")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitIn(_Body):
    """``POST /v1/tasks/{name}``."""

    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the task."
    )


class SubmitOut(BaseModel):
    """A queued (or idempotently replayed) run."""

    run_id: str
    task: str
    status: RunStatus


class BatchItem(_Body):
    """One run of a batch."""

    kwargs: dict[str, Any] = Field(default_factory=dict)


class BatchIn(_Body):
    """``POST /v1/tasks/{name}/batch``: up to 1000 runs of one task."""

    items: list[BatchItem] = Field(min_length=1, max_length=1000)


class BatchOut(BaseModel):
    """Run ids in the order of the submitted items."""

    task: str
    run_ids: list[str]


class ScheduleLabel(BaseModel):
    """A cron schedule declared on the task."""

    cron: str
    timezone: str


class TaskOut(BaseModel):
    """A registered task."""

    name: str
    category: str
    description: str
    schedules: list[ScheduleLabel]
    timeout: float | None = Field(description="Seconds before a run is cancelled")
    retry_on_error: bool
    retries: int = Field(description="Retries after a failed first attempt")
    kwargs_schema: dict[str, Any]

    @classmethod
    def of(cls, info: TaskInfo) -> TaskOut:
        """Describe a registered task."""
        return cls(
            name=info.name,
            category=info.category,
            description=info.description,
            schedules=[ScheduleLabel(cron=cron, timezone=info.timezone) for cron in info.schedules],
            timeout=info.timeout_s,
            retry_on_error=info.retry_on_error,
            retries=info.max_retries,
            kwargs_schema=info.argument_schema(),
        )


class RunError(BaseModel):
    """Why an attempt failed."""

    type: str
    message: str


class ProgressOut(BaseModel):
    """The last progress a run reported (``report_progress`` in the task)."""

    percent: float = Field(ge=0, le=100, description="How far the run is, 0 to 100")
    message: str = Field("", description="What the task said it is doing")
    at: datetime | None = Field(None, description="When the task reported it")
    attempt: int | None = Field(
        None,
        description="The attempt that reported it (a retried run keeps an earlier "
        "attempt's progress until the new attempt reports)",
    )


class RunOut(BaseModel):
    """A run record."""

    id: int
    run_id: str
    task: str
    kwargs: dict[str, Any]
    status: RunStatus
    attempt: int
    source: RunSource
    schedule_id: int | None
    scheduled_for: datetime | None
    webhook_event_id: int | None
    idempotency_key: str | None
    summary: dict[str, int] | None
    error: RunError | None
    progress: ProgressOut | None
    worker: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    deliver_to: dict[str, Any] | None = None
    send_unconfirmed_at: datetime | None = Field(
        None,
        description="Set while a `queued` run's send was never confirmed by Redis (it may "
        "or may not be on the queue): a repeat of its idempotency key or the "
        "`resend_unconfirmed_runs` job sends it again, at most once in the queue. "
        "null otherwise",
    )

    @classmethod
    def of(cls, run: JobRun) -> RunOut:
        """Serialise a row."""
        return cls.model_validate(run, from_attributes=True)


class RunActionOut(BaseModel):
    """What a retry or cancel did, for a caller without the ``read`` scope (one with it
    gets the run as ``GET /v1/runs/{run_id}`` shows it)."""

    run_id: str
    status: RunStatus = Field(description="`queued` after a retry, `cancelled` after a cancel")
    attempt: int = Field(
        description="The run's attempt number as the action left it (after a retry it "
        "moves on when a worker starts the new attempt)"
    )

    @classmethod
    def of(cls, run: JobRun) -> RunActionOut:
        """The run's id, status and attempt, nothing it holds."""
        return cls(run_id=run.run_id, status=run.status, attempt=run.attempt)  # type: ignore[arg-type]


class DeliveryOut(BaseModel):
    """One message of a run's result: where, and how it went."""

    channel: Literal["teams", "email", "calendar"]
    target: str
    status: Literal["pending", "sending", "sent", "failed"]
    attempts: int
    provider_id: str | None
    error: RunError | None
    sent_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryOut:
        """Serialise a row."""
        return cls.model_validate(delivery, from_attributes=True)


class AttemptOut(BaseModel):
    """One attempt of a run and how it ended."""

    attempt: int
    status: Literal["succeeded", "failed", "retrying", "dead", "cancelled"]
    worker: str | None = Field(
        description="host:pid:<random>, the worker process; null if no worker reported it"
    )
    started_at: datetime | None = Field(description="null if it never started")
    finished_at: datetime | None
    duration_ms: int | None
    error: RunError | None

    @classmethod
    def of(cls, attempt: RunAttempt) -> AttemptOut:
        """Serialise a row."""
        return cls.model_validate(attempt, from_attributes=True)


class RunDetailOut(RunOut):
    """A run with its result content, every attempt and every delivery
    (``GET /v1/runs/{run_id}``)."""

    content: str | None = None
    attempts: list[AttemptOut] = Field(
        default_factory=list, description="Ended attempts, first first"
    )
    deliveries: list[DeliveryOut] = Field(default_factory=list)

    @classmethod
    def of(
        cls,
        run: JobRun,
        *,
        attempts: Sequence[RunAttempt] = (),
        deliveries: Sequence[Delivery] = (),
    ) -> RunDetailOut:
        """Serialise a row with its attempts and deliveries."""
        detail = cls.model_validate(run, from_attributes=True)
        detail.attempts = [AttemptOut.of(attempt) for attempt in attempts]
        detail.deliveries = [DeliveryOut.of(delivery) for delivery in deliveries]
        return detail


class Page(BaseModel, Generic[T]):
    """A page of a list; pass ``next_cursor`` as ``cursor`` for the next one."""

    items: list[T]
    next_cursor: str | None


class FireTime(BaseModel):
    """A future fire, in UTC and in the schedule's zone."""

    utc: str
    local: str


class ScheduleTimingOut(BaseModel):
    """The schedule's timing as submitted."""

    type: Literal["cron", "interval", "once"]
    cron: str | None = None
    timezone: str | None = None
    seconds: int | None = None
    at: datetime | None = None


class ScheduleOut(BaseModel):
    """A schedule."""

    id: int
    name: str
    task: str
    kwargs: dict[str, Any]
    schedule: ScheduleTimingOut
    enabled: bool
    paused_note: str | None
    overlap: Literal["skip", "allow", "buffer_one"]
    catchup_window_s: int
    deliver_to: dict[str, Any] | None
    description: str | None
    source: Literal["label", "api"]
    created_by: str | None
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, schedule: Schedule) -> ScheduleOut:
        """Serialise a row."""
        timing = ScheduleTimingOut(type=schedule.kind)  # type: ignore[arg-type]
        if schedule.kind == "cron":
            timing.cron, timing.timezone = schedule.cron, schedule.timezone
        elif schedule.kind == "interval":
            timing.seconds = schedule.interval_s
        else:
            timing.at = schedule.at
        return cls(
            id=schedule.id,
            name=schedule.name,
            task=schedule.task,
            kwargs=schedule.kwargs,
            schedule=timing,
            enabled=schedule.enabled,
            paused_note=schedule.paused_note,
            overlap=schedule.overlap,  # type: ignore[arg-type]
            catchup_window_s=schedule.catchup_window_s,
            deliver_to=schedule.deliver_to,
            description=schedule.description,
            source=schedule.source,  # type: ignore[arg-type]
            created_by=schedule.created_by,
            next_fire_at=schedule.next_fire_at,
            last_fire_at=schedule.last_fire_at,
            finished_at=schedule.finished_at,
            created_at=schedule.created_at,
            updated_at=schedule.updated_at,
        )


class ScheduleDetailOut(ScheduleOut):
    """A schedule with its next fires and recent runs."""

    next_fires: list[FireTime]
    recent_runs: list[RunOut]
    timing_error: str | None = Field(
        None,
        description=(
            "Why the next fires are unknown: this host cannot read the schedule's timing "
            "(e.g. a timezone its tz database lacks); the scheduler does not fire it "
            "until the timing is fixed"
        ),
    )


class ScheduleChangeOut(BaseModel):
    """What a change did, for a caller without the ``read`` scope (one with it gets the
    schedule as ``GET /v1/schedules/{id}`` shows it)."""

    id: int
    changed: list[str] = Field(description="The fields the request set, by name")


class TriggerOut(BaseModel):
    """The run a manual trigger queued."""

    run_id: str
    schedule_id: int
    status: RunStatus


class WebhookEventOut(BaseModel):
    """A stored webhook event (list view)."""

    id: int
    source: str
    external_id: str
    event_type: str | None
    status: Literal["accepted", "enqueued", "processed", "failed"]
    task: str
    run_id: str | None
    error: RunError | None
    received_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, event: WebhookEvent) -> WebhookEventOut:
        """Serialise a row."""
        return cls.model_validate(event, from_attributes=True)


class WebhookEventDetailOut(WebhookEventOut):
    """A stored webhook event with its headers (secrets redacted) and body."""

    headers: dict[str, str]
    body: Any = Field(description="The JSON payload, or the raw text if it is not JSON")

    @classmethod
    def of(cls, event: WebhookEvent) -> WebhookEventDetailOut:
        """Serialise a row, parsing the stored body (its numbers exactly)."""
        try:
            body: Any = loads_exact(event.body)
        except orjson.JSONDecodeError:
            body = event.body
        base = WebhookEventOut.of(event).model_dump()
        return cls(**base, headers=event.headers, body=body)


class ReplayOut(BaseModel):
    """The run a replay queued."""

    event_id: int
    run_id: str
    status: RunStatus
