"""``jobsctl webhooks``: the inbox from the command line."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from jobs_service.cli.context import run_async, shared_broker
from jobs_service.cli.errors import EXIT_FAILED, CliError
from jobs_service.cli.output import print_table

if TYPE_CHECKING:
    import argparse

    from jobs_service.core.settings import Settings

__all__ = ["webhooks"]


def webhooks(args: argparse.Namespace, settings: Settings) -> int:
    """Dispatch the ``webhooks`` actions."""
    from jobs_service.client import EnqueueError  # noqa: PLC0415
    from jobs_service.gateway.app import create_app  # noqa: PLC0415
    from jobs_service.gateway.schemas import (  # noqa: PLC0415
        WebhookEventDetailOut,
        WebhookEventOut,
    )
    from jobs_service.infrastructure.repositories import webhooks as repo  # noqa: PLC0415
    from jobs_service.webhooks.inbox import (  # noqa: PLC0415
        EventInProgressError,
        UnknownEventError,
    )

    broker = shared_broker()

    async def act() -> Any:
        app = create_app(settings, broker=broker, announce=False)
        async with app.router.lifespan_context(app):
            database = app.state.runtime.database
            if args.action == "list":
                async with database.sessions() as session:
                    rows = await repo.list_events(
                        session,
                        repo.EventFilter(source=args.source, status=args.status),
                        limit=args.limit,
                        after_id=None,
                    )
                return [WebhookEventOut.of(row) for row in rows[: args.limit]]
            if args.action == "show":
                async with database.sessions() as session:
                    event = await repo.get_event(session, args.event_id)
                if event is None:
                    raise UnknownEventError(args.event_id)
                return WebhookEventDetailOut.of(event).model_dump(mode="json")
            return {
                "event_id": args.event_id,
                "run_id": await app.state.webhook_inbox.replay(args.event_id),
            }

    try:
        result = run_async(act())
    except (UnknownEventError, EventInProgressError) as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    except EnqueueError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    if args.action != "list":
        print(json.dumps(result, indent=2))
        return 0
    if args.json:
        print(json.dumps([row.model_dump(mode="json") for row in result], indent=2))
        return 0
    print_table(
        ["ID", "SOURCE", "TYPE", "STATUS", "RECEIVED (UTC)", "RUN ID"],
        [
            [
                str(e.id),
                e.source,
                e.event_type or "-",
                e.status,
                e.received_at.strftime("%Y-%m-%d %H:%M:%S"),
                e.run_id or "-",
            ]
            for e in result
        ],
    )
    return 0
