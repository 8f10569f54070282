"""Built-in jobs for incoming webhooks."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from taskiq import TaskiqDepends

from jobs_service.agents import DomainApi, domain_api, result_delivery, settings, webhook_inbox
from jobs_service.agents.delivery import ResultDelivery, RunResult
from jobs_service.broker import broker
from jobs_service.core.ports import WebhookRelay
from jobs_service.core.run_context import current_run
from jobs_service.core.settings import Settings
from jobs_service.core.summary import Summary, make_summary
from jobs_service.infrastructure.models import WebhookEvent
from jobs_service.webhooks.inbox import WebhookInbox

__all__ = ["process_webhook_event", "relay_webhook_events"]


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


@broker.task(
    task_name="process_webhook_event",
    retry_on_error=True,
    max_retries=5,
    timeout=300,
    category="webhooks",
)
async def process_webhook_event(
    event_id: int,
    inbox: Annotated[WebhookInbox, TaskiqDepends(webhook_inbox)],
    config: Annotated[Settings, TaskiqDepends(settings)],
    domain: Annotated[DomainApi, TaskiqDepends(domain_api)],
    delivery: Annotated[ResultDelivery, TaskiqDepends(result_delivery)],
) -> Summary:
    """Hand a webhook event to the domain action its route names, then deliver.

    The generic handler of routes without a task of their own: calls the route's
    `action` (default `webhooks/<source>`) with the event, and sends the answer to the
    route's `deliver_to`. The run is marked on the event (`processed` or `failed`).
    Returns processed, delivered and errors.
    """
    event = await inbox.load(event_id)
    source = config.webhooks.sources.get(event.source)
    route = source.route_for(event.event_type) if source is not None else None
    action = (route.action if route else None) or f"webhooks/{event.source}"
    answer = await domain.call(action, {"event": _event_payload(event)})
    run = current_run()
    delivered = 0
    if run is not None:
        run.content = answer.content
        if route is not None and route.deliver_to is not None:
            title = f"{event.source}: {event.event_type or 'event'} {event.external_id}"
            result = RunResult(run.run_id, title, answer.summary, answer.content, answer.artifacts)
            delivered = (await delivery.deliver(result, route.deliver_to)).delivered
            run.delivered = True
    return make_summary(
        processed=answer.summary.get("processed", 1),
        delivered=delivered,
        errors=answer.summary["errors"],
    )


def _event_payload(event: WebhookEvent) -> dict[str, Any]:
    """The event as the domain action gets it; a JSON body goes as the sender wrote it
    (parsed and written again, an integer beyond 64 bits would lose digits)."""
    body: Any = event.body
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    else:
        body = orjson.Fragment(body)
    return {
        "id": event.id,
        "source": event.source,
        "external_id": event.external_id,
        "type": event.event_type,
        "received_at": event.received_at.isoformat(),
        "body": body,
    }
