"""Tables of the run history (DESIGN §4). Migrations in ``migrations/`` create them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from jobs_service.infrastructure.column_types import BigIntPK, JsonDocument, UTCDateTime

__all__ = [
    "ACTIVE_STATUSES",
    "DELIVERY_CHANNELS",
    "DELIVERY_STATUSES",
    "FIRE_OUTCOMES",
    "OVERLAP_POLICIES",
    "RUN_SOURCES",
    "RUN_STATUSES",
    "SCHEDULE_KINDS",
    "SCHEDULE_SOURCES",
    "TERMINAL_STATUSES",
    "WEBHOOK_STATUSES",
    "AuditEntry",
    "Base",
    "Delivery",
    "JobRun",
    "RunAttempt",
    "Schedule",
    "ScheduleFire",
    "WebhookEvent",
    "column_length",
]

RUN_STATUSES = ("queued", "running", "succeeded", "failed", "retrying", "dead", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "dead", "cancelled")
ACTIVE_STATUSES = ("queued", "running", "retrying")
RUN_SOURCES = ("api", "schedule", "webhook", "retry", "cli")
SCHEDULE_KINDS = ("cron", "interval", "once")
SCHEDULE_SOURCES = ("label", "api")
OVERLAP_POLICIES = ("skip", "allow", "buffer_one")
FIRE_OUTCOMES = ("enqueued", "skipped", "buffered")
WEBHOOK_STATUSES = ("accepted", "enqueued", "processed", "failed")
DELIVERY_CHANNELS = ("teams", "email", "calendar")
DELIVERY_STATUSES = ("pending", "sending", "sent", "failed")

_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


#: Table options of every table with a surrogate ``id``. SQLite gives a plain ``INTEGER
#: PRIMARY KEY`` the largest id plus one, so the id of a deleted newest row would go to
#: the next row (a deleted schedule's id to the next schedule, which would then show
#: the old one's runs); with AUTOINCREMENT it never hands out an id twice. PostgreSQL's
#: sequences never do, and ignore the option.
_IDS_NEVER_REUSED = {"sqlite_autoincrement": True}


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    """Declarative base with deterministic constraint names (Alembic needs them)."""

    metadata = MetaData(naming_convention=_NAMING)


class JobRun(Base):
    """One execution of a task, from enqueue to its final state."""

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), unique=True)
    task: Mapped[str] = mapped_column(String(200))
    kwargs: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    source: Mapped[str] = mapped_column(String(16))
    schedule_id: Mapped[int | None] = mapped_column(BigIntPK, nullable=True)
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    webhook_event_id: Mapped[int | None] = mapped_column(BigIntPK, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    summary: Mapped[dict[str, int] | None] = mapped_column(JsonDocument, nullable=True)
    error: Mapped[dict[str, str] | None] = mapped_column(JsonDocument, nullable=True)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(nullable=True)
    content: Mapped[str | None] = mapped_column(Text, nullable=True)
    deliver_to: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument, nullable=True)
    #: Set on a ``queued`` run whose send the broker never confirmed (a timeout, a
    #: connection dropped after the message was written): its message may or may not be
    #: in the stream. It is sent again, at most once per queueing, by a repeat of its
    #: submit or by ``resend_unconfirmed_runs``, which clear it. NULL otherwise.
    send_unconfirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        CheckConstraint(_in("source", RUN_SOURCES), name="source"),
        Index(None, "task", "id"),
        Index(None, "status", "id"),
        Index(None, "schedule_id", "id"),
        Index(None, "finished_at"),
        Index(
            "ix_job_runs_send_unconfirmed",
            "send_unconfirmed_at",
            postgresql_where=text("send_unconfirmed_at IS NOT NULL"),
            sqlite_where=text("send_unconfirmed_at IS NOT NULL"),
        ),
        _IDS_NEVER_REUSED,
    )


class Schedule(Base):
    """A cron, interval or one-off schedule of a task, from a task label or the API."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    task: Mapped[str] = mapped_column(String(200))
    kwargs: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    kind: Mapped[str] = mapped_column(String(16))
    cron: Mapped[str | None] = mapped_column(String(200), nullable=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default=text("'UTC'"))
    interval_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    anchor_at: Mapped[datetime] = mapped_column(UTCDateTime())
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    paused_note: Mapped[str | None] = mapped_column(String(500), nullable=True)
    overlap: Mapped[str] = mapped_column(String(16), default="skip", server_default=text("'skip'"))
    catchup_window_s: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    deliver_to: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument, nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    source: Mapped[str] = mapped_column(String(8))
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(_in("kind", SCHEDULE_KINDS), name="kind"),
        CheckConstraint(_in("source", SCHEDULE_SOURCES), name="source"),
        CheckConstraint(_in("overlap", OVERLAP_POLICIES), name="overlap"),
        CheckConstraint("catchup_window_s >= 0", name="catchup_window"),
        CheckConstraint("interval_s IS NULL OR interval_s >= 1", name="interval"),
        Index(None, "enabled", "next_fire_at"),
        _IDS_NEVER_REUSED,
    )


class ScheduleFire(Base):
    """One claimed fire of a schedule.

    The unique ``(schedule_id, fire_time)`` is the claim: whichever scheduler replica
    inserts it first fires; every other replica (or a restarted one) sees the conflict
    and skips. That makes each fire idempotent without any leader election.
    """

    __tablename__ = "schedule_fires"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    schedule_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("schedules.id", ondelete="CASCADE")
    )
    fire_time: Mapped[datetime] = mapped_column(UTCDateTime())
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_by: Mapped[str] = mapped_column(String(200))
    #: When the fire was claimed (a buffered one: when it started), or last leased by an
    #: outbox re-send; the outbox leaves an unsent claim alone for two seconds after it.
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: When the run's message reached the broker; NULL on an ``enqueued`` claim means
    #: "committed but not sent yet" (the outbox the scheduler re-sends from).
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("schedule_id", "fire_time"),
        CheckConstraint(_in("outcome", FIRE_OUTCOMES), name="outcome"),
        Index(
            "ix_schedule_fires_unsent",
            "claimed_at",
            postgresql_where=text("outcome = 'enqueued' AND sent_at IS NULL"),
            sqlite_where=text("outcome = 'enqueued' AND sent_at IS NULL"),
        ),
        Index(
            "ix_schedule_fires_buffered",
            "schedule_id",
            postgresql_where=text("outcome = 'buffered'"),
            sqlite_where=text("outcome = 'buffered'"),
        ),
        Index(None, "fire_time"),
        _IDS_NEVER_REUSED,
    )


class WebhookEvent(Base):
    """One verified incoming webhook event, stored before anything else happens to it.

    ``(source, external_id)`` is unique, so a sender's retry of the same event is
    recognised as a duplicate instead of starting a second run.
    """

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(100))
    external_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str | None] = mapped_column(String(200), nullable=True)
    headers: Mapped[dict[str, str]] = mapped_column(JsonDocument, default=dict)
    body: Mapped[str] = mapped_column(Text)
    task: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[dict[str, str] | None] = mapped_column(JsonDocument, nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("source", "external_id"),
        CheckConstraint(_in("status", WEBHOOK_STATUSES), name="status"),
        Index(None, "status", "updated_at"),
        Index(None, "source", "id"),
        _IDS_NEVER_REUSED,
    )


class Delivery(Base):
    """One message of a run's result to one place (a Teams channel, recipients, an event).

    ``(run_id, channel, target)`` is unique: a retried run finds the row of a message it
    already sent and skips it, so nobody gets the same report twice.
    """

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    provider_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    error: Mapped[dict[str, str] | None] = mapped_column(JsonDocument, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("run_id", "channel", "target"),
        CheckConstraint(_in("channel", DELIVERY_CHANNELS), name="channel"),
        CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
        _IDS_NEVER_REUSED,
    )


class RunAttempt(Base):
    """One attempt of a run: the run row shows the latest, this table the others.

    A succeeded run's last attempt has no row here on PostgreSQL (the run's row is its
    record; ``runs.list_attempts`` lists it from there).

    Written by the run recorder with each attempt's end; ``(run_id, attempt)`` is unique
    so a redelivered copy of an attempt updates its row instead of adding one.
    """

    __tablename__ = "run_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(nullable=True)
    error: Mapped[dict[str, str] | None] = mapped_column(JsonDocument, nullable=True)

    __table_args__ = (
        UniqueConstraint("run_id", "attempt"),
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        _IDS_NEVER_REUSED,
    )


class AuditEntry(Base):
    """One operator action: who (the API key's name), what, when, on what."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(255), nullable=True)
    outcome: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument, nullable=True)

    __table_args__ = (Index(None, "at"), Index(None, "actor", "id"), _IDS_NEVER_REUSED)


def column_length(model: type[Base], name: str) -> int:
    """The width of a bounded string column of ``model``: values are cut to it where
    they are written, since one the database refuses would fail its whole statement."""
    column_type = model.__table__.c[name].type
    if not isinstance(column_type, String) or column_type.length is None:  # pragma: no cover
        msg = f"{model.__tablename__}.{name} is not a bounded string column"
        raise TypeError(msg)
    return column_type.length
