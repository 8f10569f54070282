"""webhook_events: the webhook inbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobs_service.infrastructure.column_types import BigIntPK, JsonDocument, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=True),
        sa.Column("headers", JsonDocument, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", JsonDocument, nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_events"),
        sa.UniqueConstraint("source", "external_id", name="uq_webhook_events_source_external_id"),
        sa.CheckConstraint(
            "status IN ('accepted', 'enqueued', 'processed', 'failed')",
            name=op.f("ck_webhook_events_status"),
        ),
    )
    op.create_index(
        "ix_webhook_events_status_updated_at", "webhook_events", ["status", "updated_at"]
    )
    op.create_index("ix_webhook_events_source_id", "webhook_events", ["source", "id"])


def downgrade() -> None:
    op.drop_table("webhook_events")
