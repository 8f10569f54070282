"""Dependency providers: resolve an agent from the runtime for ``TaskiqDepends``.

They take the FastAPI ``Request`` that taskiq-fastapi supplies inside workers (and the
gateway supplies in the embedded mode), so tasks reach the same runtime as the routes.
"""

from __future__ import annotations

from fastapi import Request
from taskiq import Context, TaskiqDepends

from jobs_service.agents.delivery import ResultDelivery
from jobs_service.agents.domain_api import DomainApi
from jobs_service.agents.outside import OutsideAgents
from jobs_service.agents.run_history import DatabaseRunHistory
from jobs_service.agents.system_health import ServiceHealthProbe
from jobs_service.client import JobsClient
from jobs_service.core.settings import Settings
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.webhooks.inbox import WebhookInbox

__all__ = [
    "domain_api",
    "health_probe",
    "outside_agents",
    "result_delivery",
    "run_history",
    "runtime",
    "settings",
    "unconfirmed_sends",
    "webhook_inbox",
]


def runtime(request: Request = TaskiqDepends()) -> Runtime:
    """The process's runtime, attached to the app by the gateway lifespan."""
    value = request.app.state.runtime
    if not isinstance(value, Runtime):  # pragma: no cover - wiring bug
        msg = "app.state.runtime is not set"
        raise TypeError(msg)
    return value


def run_history(current: Runtime = TaskiqDepends(runtime)) -> DatabaseRunHistory:
    """The run-history agent."""
    return DatabaseRunHistory(current.database)


def health_probe(
    current: Runtime = TaskiqDepends(runtime), context: Context = TaskiqDepends()
) -> ServiceHealthProbe:
    """The health-probe agent (checks the broker that delivered this task)."""
    return ServiceHealthProbe(current.database, context.broker)


def settings(current: Runtime = TaskiqDepends(runtime)) -> Settings:
    """The settings this process was started with."""
    return current.settings


def unconfirmed_sends(
    current: Runtime = TaskiqDepends(runtime), context: Context = TaskiqDepends()
) -> JobsClient:
    """Runs whose send was not confirmed, sent again on the broker that delivered this
    task."""
    return JobsClient(context.broker, current)


def webhook_inbox(
    current: Runtime = TaskiqDepends(runtime), context: Context = TaskiqDepends()
) -> WebhookInbox:
    """The webhook inbox, sending on the broker that delivered this task."""
    return WebhookInbox(
        current.database,
        JobsClient(context.broker, current),
        relay_after_s=current.settings.webhooks.relay_after_s,
        sources=current.settings.webhooks.sources,
    )


def outside_agents(current: Runtime = TaskiqDepends(runtime)) -> OutsideAgents:
    """The process's outside-world agents (built once, closed when the runtime stops)."""
    return current.resource(
        "outside_agents", lambda: OutsideAgents(current.settings, current.database)
    )


def domain_api(agents: OutsideAgents = TaskiqDepends(outside_agents)) -> DomainApi:
    """The domain application's agent."""
    return agents.domain_api()


def result_delivery(agents: OutsideAgents = TaskiqDepends(outside_agents)) -> ResultDelivery:
    """Result delivery to Teams and Outlook."""
    return agents.delivery()
