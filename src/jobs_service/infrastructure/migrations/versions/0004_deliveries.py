"""deliveries, and a run's result content and delivery targets on job_runs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobs_service.infrastructure.column_types import BigIntPK, JsonDocument, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_runs") as batch:
        batch.add_column(sa.Column("content", sa.Text(), nullable=True))
        batch.add_column(sa.Column("deliver_to", JsonDocument, nullable=True))
    op.create_table(
        "deliveries",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider_id", sa.String(255), nullable=True),
        sa.Column("idempotency_key", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", JsonDocument, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint(
            "run_id", "channel", "target", name="uq_deliveries_run_id_channel_target"
        ),
        sa.CheckConstraint(
            "channel IN ('teams', 'email', 'calendar')", name=op.f("ck_deliveries_channel")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed')", name=op.f("ck_deliveries_status")
        ),
    )


def downgrade() -> None:
    op.drop_table("deliveries")
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column("deliver_to")
        batch.drop_column("content")
