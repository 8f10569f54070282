"""run_attempts (every attempt of a run) and audit_log (every operator action).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobs_service.infrastructure.column_types import BigIntPK, JsonDocument, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_STATUSES = "'queued', 'running', 'succeeded', 'failed', 'retrying', 'dead', 'cancelled'"


def upgrade() -> None:
    op.create_table(
        "run_attempts",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("error", JsonDocument, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_run_attempts"),
        sa.UniqueConstraint("run_id", "attempt", name="uq_run_attempts_run_id_attempt"),
        sa.CheckConstraint(f"status IN ({_STATUSES})", name=op.f("ck_run_attempts_status")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("detail", JsonDocument, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_actor_id", "audit_log", ["actor", "id"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("run_attempts")
