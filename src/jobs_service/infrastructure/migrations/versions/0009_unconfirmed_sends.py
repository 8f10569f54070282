"""A queued run whose send the broker never confirmed says so:
``job_runs.send_unconfirmed_at``, with a partial index of the (few) runs that have it.

A keyed submit, or an operator's retry, whose send timed out or lost its connection
after the message was written keeps its run ``queued`` instead of removing it (the
message may have reached Redis), marked so that a repeat of the submit and the
``resend_unconfirmed_runs`` job send it again. On PostgreSQL adding a nullable column
changes the catalogue only, and the index holds no row until such a send happens.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobs_service.infrastructure.column_types import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_runs") as batch:
        batch.add_column(sa.Column("send_unconfirmed_at", UTCDateTime(), nullable=True))
    unconfirmed = sa.text("send_unconfirmed_at IS NOT NULL")
    op.create_index(
        "ix_job_runs_send_unconfirmed",
        "job_runs",
        ["send_unconfirmed_at"],
        postgresql_where=unconfirmed,
        sqlite_where=unconfirmed,
    )


def downgrade() -> None:
    op.drop_index("ix_job_runs_send_unconfirmed", table_name="job_runs")
    # SQLite drops a column by rebuilding the table, from a reflection that does not
    # carry AUTOINCREMENT (0008): say it again, or the rebuilt table would reuse ids.
    with op.batch_alter_table("job_runs", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("send_unconfirmed_at")
