"""``jobsctl audit``: the audit log from the command line."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from jobs_service.cli.context import run_async
from jobs_service.cli.errors import EXIT_FAILED, CliError
from jobs_service.cli.output import print_table

if TYPE_CHECKING:
    import argparse

    from jobs_service.core.settings import Settings
    from jobs_service.gateway.routes.audit import AuditEntryOut

__all__ = ["audit"]


def audit(args: argparse.Namespace, settings: Settings) -> int:
    """List operator actions, newest first."""
    from jobs_service.gateway.routes.audit import AuditEntryOut  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415
    from jobs_service.infrastructure.repositories import audit as repo  # noqa: PLC0415

    async def read() -> list[AuditEntryOut]:
        database = Database(settings.database_url, settings.database)
        try:
            async with database.sessions() as session:
                filters = repo.AuditFilter(
                    actor=args.actor, action=args.action, target=args.target, since=args.since
                )
                rows = await repo.list_entries(session, filters, limit=args.limit, after_id=None)
            return [AuditEntryOut.of(row) for row in rows[: args.limit]]
        finally:
            await database.close()

    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    try:
        entries = run_async(read())
    except DBAPIError as exc:  # not str(exc): SQLAlchemy appends the statement
        raise CliError(
            f"cannot read the audit log ({type(exc.orig).__name__}: {exc.orig}); "
            "is the database migrated? (jobsctl migrate)",
            EXIT_FAILED,
        ) from None
    if args.json:
        print(json.dumps([entry.model_dump(mode="json") for entry in entries], indent=2))
        return 0
    print_table(
        ["ID", "AT (UTC)", "ACTOR", "ACTION", "TARGET", "OUTCOME", "REQUEST ID"],
        [
            [
                str(entry.id),
                entry.at.strftime("%Y-%m-%d %H:%M:%S"),
                entry.actor,
                entry.action,
                entry.target or "-",
                str(entry.outcome),
                entry.request_id or "-",
            ]
            for entry in entries
        ],
    )
    return 0
