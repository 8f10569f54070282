"""Built-in jobs that do their work in the domain application.

"Jobs orchestrate, they don't implement": each job asks the domain API to run an
action and returns the counts the domain reports. ``sync_accounts`` and
``check_expiring_tokens`` are the periodic jobs of a typical provider-integration app;
their label schedules are synced only when ``[domain_api] base_url`` is set, so a
deployment without a domain API does not fail them every 15 minutes.
"""

from __future__ import annotations

from typing import Annotated, Any

from taskiq import TaskiqDepends

from jobs_service.agents import DomainApi, domain_api, result_delivery
from jobs_service.agents.delivery import ResultDelivery, RunResult
from jobs_service.broker import broker
from jobs_service.core.actions import ActionName
from jobs_service.core.delivery import DeliverTo
from jobs_service.core.run_context import current_run
from jobs_service.core.summary import Summary, make_summary

__all__ = ["check_expiring_tokens", "run_agent_task", "sync_accounts"]

# The periodic jobs of a provider integration: same retries, timeout and cadence.
_PROVIDER_JOB: dict[str, Any] = {
    "retry_on_error": True,
    "max_retries": 3,
    "timeout": 300,
    "category": "provider",
    "schedule": "*/15 * * * *",
    "needs": "domain_api",
}


@broker.task(
    task_name="run_agent_task",
    retry_on_error=True,
    max_retries=3,
    # A domain agent that hangs must not hold a slot (and its lease, renewed while the
    # run lasts) for ever: four minutes, then the attempt fails and is retried.
    timeout=240,
    category="agents",
)
async def run_agent_task(
    agent: ActionName,
    message: str = "",
    payload: dict[str, Any] | None = None,
    deliver_to: DeliverTo | None = None,
    *,
    domain: Annotated[DomainApi, TaskiqDepends(domain_api)],
    delivery: Annotated[ResultDelivery, TaskiqDepends(result_delivery)],
) -> Summary:
    """Ask a domain agent (`agents/<agent>`) for a result and deliver it.

    The general job behind dynamic schedules such as a weekly KPI report: the domain
    answers counts and markdown, which go to `deliver_to` (Teams, email, calendar). A
    retry re-asks with the same Idempotency-Key and sends only what was not yet sent.
    Returns processed, delivered and errors.
    """
    answer = await domain.call(f"agents/{agent}", {"message": message, **(payload or {})})
    run = current_run()
    delivered = 0
    if run is not None:
        run.content = answer.content
    if deliver_to is not None and run is not None:
        result = RunResult(
            run_id=run.run_id,
            title=f"{agent}: {message}" if message else agent,
            summary=answer.summary,
            content=answer.content,
            artifacts=answer.artifacts,
        )
        delivered = (await delivery.deliver(result, deliver_to)).delivered
        run.delivered = True
    return make_summary(
        processed=answer.summary.get("processed", 1),
        delivered=delivered,
        errors=answer.summary["errors"],
    )


async def _counts(domain: DomainApi, action: str) -> Summary:
    answer = await domain.call(action, {})
    run = current_run()
    if run is not None:
        run.content = answer.content
    counts = answer.summary
    return make_summary(
        checked=counts.get("checked", 0),
        processed=counts.get("processed", 0),
        errors=counts["errors"],
    )


@broker.task(task_name="sync_accounts", **_PROVIDER_JOB)
async def sync_accounts(domain: Annotated[DomainApi, TaskiqDepends(domain_api)]) -> Summary:
    """Have the domain sync its accounts with the provider (action `accounts/sync`).

    Schedule: every 15 minutes (when the domain API is configured). Returns checked,
    processed and errors as the domain reports them.
    """
    return await _counts(domain, "accounts/sync")


@broker.task(task_name="check_expiring_tokens", **_PROVIDER_JOB)
async def check_expiring_tokens(domain: Annotated[DomainApi, TaskiqDepends(domain_api)]) -> Summary:
    """Have the domain refresh provider tokens expiring within 24 h (`tokens/check-expiring`).

    Schedule: every 15 minutes (when the domain API is configured). Returns checked,
    processed and errors as the domain reports them.
    """
    return await _counts(domain, "tokens/check-expiring")
