"""Tables of the run history (DESIGN §4). Migrations in ``migrations/`` create them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, MetaData, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from jobs_service.infrastructure.column_types import BigIntPK, JsonDocument, UTCDateTime

__all__ = ["RUN_SOURCES", "RUN_STATUSES", "TERMINAL_STATUSES", "Base", "JobRun"]

RUN_STATUSES = ("queued", "running", "succeeded", "failed", "retrying", "dead", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "dead", "cancelled")
RUN_SOURCES = ("api", "schedule", "webhook", "retry", "cli")

_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


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

    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        CheckConstraint(_in("source", RUN_SOURCES), name="source"),
        Index(None, "task", "id"),
        Index(None, "status", "id"),
        Index(None, "schedule_id", "id"),
        Index(None, "finished_at"),
    )
