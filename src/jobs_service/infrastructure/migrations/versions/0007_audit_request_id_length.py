"""An audit entry holds its request's id whole: ``audit_log.request_id`` takes 128
characters, as many as the gateway accepts in a client's ``X-Request-ID``.

It held 64, so the entry of a request with a longer id carried a cut id that matched
neither the answer nor the log lines. On PostgreSQL widening a ``varchar`` is a change
of the catalogue only (no rewrite, no scan); SQLite rebuilds the table (batch mode).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column(
            "request_id", type_=sa.String(128), existing_type=sa.String(64), existing_nullable=True
        )


def downgrade() -> None:
    # Longer ids are cut to what the narrower column holds.
    op.execute("UPDATE audit_log SET request_id = substr(request_id, 1, 64)")
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column(
            "request_id", type_=sa.String(64), existing_type=sa.String(128), existing_nullable=True
        )
