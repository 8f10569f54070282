"""job_runs: the run history.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobs_service.infrastructure.column_types import BigIntPK, JsonDocument, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_STATUSES = "'queued', 'running', 'succeeded', 'failed', 'retrying', 'dead', 'cancelled'"
_SOURCES = "'api', 'schedule', 'webhook', 'retry', 'cli'"


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("kwargs", JsonDocument, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("schedule_id", BigIntPK, nullable=True),
        sa.Column("scheduled_for", UTCDateTime(), nullable=True),
        sa.Column("webhook_event_id", BigIntPK, nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("summary", JsonDocument, nullable=True),
        sa.Column("error", JsonDocument, nullable=True),
        sa.Column("progress", JsonDocument, nullable=True),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("queued_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_job_runs"),
        sa.UniqueConstraint("run_id", name="uq_job_runs_run_id"),
        sa.UniqueConstraint("idempotency_key", name="uq_job_runs_idempotency_key"),
        sa.CheckConstraint(f"status IN ({_STATUSES})", name=op.f("ck_job_runs_status")),
        sa.CheckConstraint(f"source IN ({_SOURCES})", name=op.f("ck_job_runs_source")),
    )
    op.create_index("ix_job_runs_task_id", "job_runs", ["task", "id"])
    op.create_index("ix_job_runs_status_id", "job_runs", ["status", "id"])
    op.create_index("ix_job_runs_schedule_id_id", "job_runs", ["schedule_id", "id"])
    op.create_index("ix_job_runs_finished_at", "job_runs", ["finished_at"])


def downgrade() -> None:
    op.drop_table("job_runs")
