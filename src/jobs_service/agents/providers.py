"""Dependency providers: resolve an agent from the runtime for ``TaskiqDepends``.

They take the FastAPI ``Request`` that taskiq-fastapi supplies inside workers (and the
gateway supplies in the embedded mode), so tasks reach the same runtime as the routes.
"""

from __future__ import annotations

from fastapi import Request
from taskiq import Context, TaskiqDepends

from jobs_service.agents.run_history import DatabaseRunHistory
from jobs_service.agents.system_health import ServiceHealthProbe
from jobs_service.client import JobsClient
from jobs_service.core.settings import Settings
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.webhooks.inbox import WebhookInbox

__all__ = ["health_probe", "run_history", "runtime", "settings", "webhook_inbox"]


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


def webhook_inbox(
    current: Runtime = TaskiqDepends(runtime), context: Context = TaskiqDepends()
) -> WebhookInbox:
    """The webhook inbox, sending on the broker that delivered this task."""
    return WebhookInbox(
        current.database,
        JobsClient(context.broker, current),
        relay_after_s=current.settings.webhooks.relay_after_s,
    )
