"""Agents: the only code that talks to the outside world on a task's behalf.

Each agent implements a port from :mod:`jobs_service.core.ports` and is injected into
tasks with ``TaskiqDepends``; the providers here resolve it from the process's runtime.
"""

from __future__ import annotations

from jobs_service.agents.domain_api import DomainAnswer, DomainApi
from jobs_service.agents.providers import (
    domain_api,
    health_probe,
    result_delivery,
    run_history,
    runtime,
    settings,
    unconfirmed_sends,
    webhook_inbox,
)

__all__ = [
    "DomainAnswer",
    "DomainApi",
    "domain_api",
    "health_probe",
    "result_delivery",
    "run_history",
    "runtime",
    "settings",
    "unconfirmed_sends",
    "webhook_inbox",
]
