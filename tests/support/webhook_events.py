"""Webhook events stored straight into the inbox table, in a given state and age."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import update

from jobs_service.core.ids import new_run_id
from jobs_service.infrastructure.models import WebhookEvent
from jobs_service.infrastructure.repositories import webhooks

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """The inbox row's id and the run id it was stored with."""

    id: int
    run_id: str


async def store_events(
    connection: AsyncConnection, states: Mapping[str, tuple[str, datetime]], *, body: str = "{}"
) -> dict[str, StoredEvent]:
    """Store one event of source ``crm`` per external id, each ``(status, when it last
    changed)``; returns them by external id."""
    run_ids = {name: new_run_id() for name in states}
    ids = await webhooks.insert_events(
        connection,
        [
            webhooks.NewEvent(
                source="crm",
                external_id=name,
                event_type="contact.created",
                headers={},
                body=body,
                task="process_webhook_event",
                run_id=run_ids[name],
                received_at=changed_at,
            )
            for name, (_, changed_at) in states.items()
        ],
    )
    stored = {name: StoredEvent(ids[run_id], run_id) for name, run_id in run_ids.items()}
    for name, (status, changed_at) in states.items():
        await connection.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == stored[name].id)
            .values(status=status, updated_at=changed_at)
        )
    return stored
