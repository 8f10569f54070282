"""CHECK constraints get the names the models give them.

Revisions 0001-0005 named their CHECK constraints ``ck_<table>_<what>`` and the naming
convention prefixed them again, so databases created by them hold
``ck_job_runs_ck_job_runs_status`` where the models (and any later migration that drops
or replaces a constraint) say ``ck_job_runs_status``. Those revisions now mark their
names final (``op.f``), so new databases are right from the start; this revision renames
the doubled names of databases made before.

On PostgreSQL the rename is in place (``ALTER TABLE … RENAME CONSTRAINT``, no rewrite,
no scan). SQLite cannot rename a constraint without rebuilding its table; its embedded
databases keep the doubled names, which only matters to a migration that names one,
and such a migration rebuilds the table in batch mode anyway.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: (table, constraint name as the models give it)
_CONSTRAINTS = (
    ("job_runs", "ck_job_runs_status"),
    ("job_runs", "ck_job_runs_source"),
    ("schedules", "ck_schedules_kind"),
    ("schedules", "ck_schedules_source"),
    ("schedules", "ck_schedules_overlap"),
    ("schedules", "ck_schedules_catchup_window"),
    ("schedules", "ck_schedules_interval"),
    ("schedule_fires", "ck_schedule_fires_outcome"),
    ("webhook_events", "ck_webhook_events_status"),
    ("deliveries", "ck_deliveries_channel"),
    ("deliveries", "ck_deliveries_status"),
    ("run_attempts", "ck_run_attempts_status"),
)


def upgrade() -> None:
    _rename(doubled=True)


def downgrade() -> None:
    _rename(doubled=False)


def _rename(*, doubled: bool) -> None:
    """Rename each constraint from its doubled name to its own (or back), where the
    database holds the name renamed from."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    existing = set(
        bind.execute(sa.text("SELECT conname FROM pg_constraint WHERE contype = 'c'")).scalars()
    )
    for table, name in _CONSTRAINTS:
        twice = f"ck_{table}_{name}"
        old, new = (twice, name) if doubled else (name, twice)
        if old in existing:
            op.execute(sa.text(f'ALTER TABLE "{table}" RENAME CONSTRAINT "{old}" TO "{new}"'))
