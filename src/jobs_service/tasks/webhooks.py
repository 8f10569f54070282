"""Built-in jobs for incoming webhooks."""

from __future__ import annotations

from typing import Annotated

from taskiq import TaskiqDepends

from jobs_service.agents import webhook_inbox
from jobs_service.broker import broker
from jobs_service.core.ports import WebhookRelay
from jobs_service.core.summary import Summary, make_summary

__all__ = ["relay_webhook_events"]


@broker.task(
    task_name="relay_webhook_events",
    timeout=120,
    category="webhooks",
    schedule="*/10 * * * *",
)
async def relay_webhook_events(
    inbox: Annotated[WebhookRelay, TaskiqDepends(webhook_inbox)],
) -> Summary:
    """Enqueue webhook events stored while the broker was down.

    Schedule: every 10 minutes, as a backstop: every gateway already relays every
    ``webhooks.relay_after_s`` (5 s) while it runs. The same run id is sent again, so an
    event is never processed by two different runs. Returns relayed and errors.
    """
    return make_summary(relayed=await inbox.relay())
