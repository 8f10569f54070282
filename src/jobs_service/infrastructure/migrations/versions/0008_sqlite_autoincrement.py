"""On SQLite an id is never handed out twice: every table's integer key becomes
``INTEGER PRIMARY KEY AUTOINCREMENT``.

Without AUTOINCREMENT SQLite gives a new row the largest id in its table plus one, so
the id of the newest row, once deleted, goes to the next row: a deleted schedule's id
to the next schedule created (whose ``recent_runs`` then lists the old schedule's runs,
which keep ``job_runs.schedule_id``, and whose audit entries mix with the old one's),
the numeric id of a run to a later run once retention has deleted the newest, and so on
for every table. With AUTOINCREMENT SQLite keeps the largest id each table ever had in
``sqlite_sequence`` and never hands out one at or below it.

SQLite cannot change a table's key in place, so each table is rebuilt (batch mode,
``recreate="always"``): its columns, constraints and indexes are reflected from the
database, a copy is created with AUTOINCREMENT, the rows are copied with their ids and
the copy replaces the table. Foreign keys must not be enforced while this runs, or
dropping the old ``schedules`` would delete every ``schedule_fires`` row (``ON DELETE
CASCADE``): ``migrate.upgrade`` turns them off around the transaction and checks them
before the commit, and this revision refuses to run with them on. CHECK constraints of
databases made before 0006, whose names SQLite kept doubled
(``ck_job_runs_ck_job_runs_status``), get the models' names on the way.

Where the sequence starts. The copy leaves ``sqlite_sequence`` at each table's largest
id. An id handed out before and deleted since is not in its table any more; where other
rows still name it, the sequence starts above it too:

- ``schedules``: the largest ``job_runs.schedule_id`` (the runs of a deleted schedule
  keep its id), and the largest schedule id of a successful operator action in the
  audit log (``POST /v1/schedules`` records the id it created; ``PATCH``, ``DELETE``,
  ``.../trigger`` and ``jobsctl schedules`` the id they acted on). A refused action is
  no evidence: a client may name any number.
- ``webhook_events``: the largest ``job_runs.webhook_event_id``, and the largest event
  id of a successful replay (``POST /v1/webhooks/events/{event_id}/replay``,
  ``jobsctl webhooks replay``) in the audit log.
- ``job_runs``, ``schedule_fires``, ``deliveries``, ``run_attempts``, ``audit_log``:
  no other row stores their ids (attempts, deliveries, fires and the audit log name a
  run by its ``run_id``, a UUIDv7 that is never reused, not by ``job_runs.id``), so
  their sequence starts at the table's largest id. An id above every remaining row
  that was deleted before this upgrade may be handed out once more, as it would have
  been without it; none is after.

On PostgreSQL this revision does nothing: the keys are ``BIGSERIAL`` columns whose
sequences never hand out a number twice.

The downgrade rebuilds the tables in their previous form (no AUTOINCREMENT, named
primary keys); SQLite drops their ``sqlite_sequence`` rows with the old tables, so new
ids are again the largest id plus one.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: Every table with a surrogate integer key (``id``).
_TABLES = (
    "job_runs",
    "schedules",
    "schedule_fires",
    "webhook_events",
    "deliveries",
    "run_attempts",
    "audit_log",
)

#: Ids of a table that other rows still hold, as ``SELECT`` statements of one number.
_REFERENCED_IDS = {
    "schedules": ("SELECT max(schedule_id) FROM job_runs",),
    "webhook_events": ("SELECT max(webhook_event_id) FROM job_runs",),
}

#: Audit actions whose target is an id of the table, as GLOB patterns of ``action``.
_AUDITED_ACTIONS = {
    "schedules": (
        "POST /v1/schedules",
        "* /v1/schedules/{schedule_id}*",
        "jobsctl schedules *",
    ),
    "webhook_events": (
        "POST /v1/webhooks/events/{event_id}/replay",
        "jobsctl webhooks replay",
    ),
}

#: The largest numeric target of successful audit entries with one of the actions
#: (an HTTP status 2xx, or exit code 0 for ``jobsctl``).
_AUDITED_ID = """
SELECT max(CAST(target AS INTEGER)) FROM audit_log
WHERE target <> '' AND target NOT GLOB '*[^0-9]*' AND length(target) < 19
  AND ({actions})
  AND CASE WHEN action GLOB 'jobsctl *' THEN outcome = 0 ELSE outcome BETWEEN 200 AND 299 END
"""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    _refuse_enforced_foreign_keys(bind)
    handed_out = {table: _highest_id_handed_out(bind, table) for table in _TABLES}
    for table in _TABLES:
        _rebuild(bind, table, autoincrement=True)
    for table, highest in handed_out.items():
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :table"), {"table": table})
        bind.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:table, :seq)"),
            {"table": table, "seq": highest},
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    _refuse_enforced_foreign_keys(bind)
    for table in _TABLES:
        _rebuild(bind, table, autoincrement=False)


def _refuse_enforced_foreign_keys(bind: sa.Connection) -> None:
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar_one():
        msg = (
            "revision 0008 rebuilds tables and needs SQLite's foreign keys off "
            "(dropping schedules would delete schedule_fires): run it with jobsctl migrate"
        )
        raise CommandError(msg)


def _highest_id_handed_out(bind: sa.Connection, table: str) -> int:
    """The largest id the table has or, as far as other rows tell, ever had."""
    found = [bind.execute(sa.text(f"SELECT max(id) FROM {table}")).scalar()]  # noqa: S608 - a name from _TABLES
    found += [bind.execute(sa.text(query)).scalar() for query in _REFERENCED_IDS.get(table, ())]
    actions = _AUDITED_ACTIONS.get(table, ())
    if actions:
        matches = " OR ".join(f"action GLOB :action_{n}" for n in range(len(actions)))
        audited = sa.text(_AUDITED_ID.format(actions=matches))
        found.append(
            bind.execute(audited, {f"action_{n}": glob for n, glob in enumerate(actions)}).scalar()
        )
    return max((int(value) for value in found if value is not None), default=0)


def _rebuild(bind: sa.Connection, table: str, *, autoincrement: bool) -> None:
    """Rebuild ``table`` with or without AUTOINCREMENT, its CHECK constraints under the
    models' names; without it, its primary key named as revisions 0001-0005 named it."""
    doubled_prefix = f"ck_{table}_ck_{table}_"
    doubled = [
        check
        for check in sa.inspect(bind).get_check_constraints(table)
        if str(check["name"]).startswith(doubled_prefix)
    ]
    with op.batch_alter_table(
        table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ) as batch:
        for check in doubled:
            name = str(check["name"])
            batch.drop_constraint(op.f(name), type_="check")
            batch.create_check_constraint(
                op.f(name.removeprefix(f"ck_{table}_")), sa.text(check["sqltext"])
            )
        if not autoincrement:
            batch.create_primary_key(f"pk_{table}", ["id"])
