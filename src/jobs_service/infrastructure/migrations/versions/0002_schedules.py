"""schedules and schedule_fires.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobs_service.infrastructure.column_types import BigIntPK, JsonDocument, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("kwargs", JsonDocument, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("cron", sa.String(200), nullable=True),
        sa.Column("timezone", sa.String(64), server_default=sa.text("'UTC'"), nullable=False),
        sa.Column("interval_s", sa.Integer(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=True),
        sa.Column("anchor_at", UTCDateTime(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("paused_note", sa.String(500), nullable=True),
        sa.Column("overlap", sa.String(16), server_default=sa.text("'skip'"), nullable=False),
        sa.Column("catchup_window_s", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("deliver_to", JsonDocument, nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("next_fire_at", UTCDateTime(), nullable=True),
        sa.Column("last_fire_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
        sa.UniqueConstraint("name", name="uq_schedules_name"),
        sa.CheckConstraint("kind IN ('cron', 'interval', 'once')", name=op.f("ck_schedules_kind")),
        sa.CheckConstraint("source IN ('label', 'api')", name=op.f("ck_schedules_source")),
        sa.CheckConstraint(
            "overlap IN ('skip', 'allow', 'buffer_one')", name=op.f("ck_schedules_overlap")
        ),
        sa.CheckConstraint("catchup_window_s >= 0", name=op.f("ck_schedules_catchup_window")),
        sa.CheckConstraint(
            "interval_s IS NULL OR interval_s >= 1", name=op.f("ck_schedules_interval")
        ),
    )
    op.create_index("ix_schedules_enabled_next_fire_at", "schedules", ["enabled", "next_fire_at"])
    op.create_table(
        "schedule_fires",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("schedule_id", BigIntPK, nullable=False),
        sa.Column("fire_time", UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("claimed_by", sa.String(200), nullable=False),
        sa.Column("claimed_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_schedule_fires"),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            ondelete="CASCADE",
            name="fk_schedule_fires_schedule_id_schedules",
        ),
        sa.UniqueConstraint(
            "schedule_id", "fire_time", name="uq_schedule_fires_schedule_id_fire_time"
        ),
        sa.CheckConstraint(
            "outcome IN ('enqueued', 'skipped', 'buffered')", name=op.f("ck_schedule_fires_outcome")
        ),
    )

    unsent = sa.text("outcome = 'enqueued' AND sent_at IS NULL")
    op.create_index(
        "ix_schedule_fires_unsent",
        "schedule_fires",
        ["claimed_at"],
        postgresql_where=unsent,
        sqlite_where=unsent,
    )
    buffered = sa.text("outcome = 'buffered'")
    op.create_index(
        "ix_schedule_fires_buffered",
        "schedule_fires",
        ["schedule_id"],
        postgresql_where=buffered,
        sqlite_where=buffered,
    )
    op.create_index("ix_schedule_fires_fire_time", "schedule_fires", ["fire_time"])


def downgrade() -> None:
    op.drop_table("schedule_fires")
    op.drop_index("ix_schedules_enabled_next_fire_at", table_name="schedules")
    op.drop_table("schedules")
