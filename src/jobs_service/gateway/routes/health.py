"""Liveness, readiness and metrics: unauthenticated, for orchestrators and scrapers.

``/metrics`` is this process's registry (webhook ingestion; in the embedded mode also
runs, deliveries and the scheduler) followed by the queue's depth and oldest ages, read
from the broker at scrape time (see :mod:`jobs_service.infrastructure.queue_metrics`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from jobs_service.gateway.problems import problem_response, problem_responses
from jobs_service.infrastructure.health import check_broker, check_database
from jobs_service.infrastructure.queue_metrics import QueueProbe, queue_exposition

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: the process answers; checks no dependency")
async def health() -> dict[str, str]:
    """Always 200 while the event loop runs."""
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Readiness: the database (at this release's schema) and the broker answer",
    responses=problem_responses({503: "A dependency is down, or the schema is not migrated"}),
)
async def ready(request: Request) -> Any:
    """200 with each check, or 503 problem+json naming the failing ones.

    The database check reads the schema's revision at every call where it ran a bare
    ``SELECT 1`` (two small catalogue reads on one pooled connection instead of one, so
    nothing to cache): a database restored from a backup taken before the last
    migration, or a failover to one never migrated, turns the gateway not ready rather
    than answering 500 to every call.
    """
    runtime = request.app.state.runtime
    results = await asyncio.gather(
        check_database(runtime.database, schema=True), check_broker(request.app.state.broker)
    )
    checks = {
        result.name: {"ok": result.ok, "latency_ms": result.latency_ms, "detail": result.detail}
        for result in results
    }
    failing = [result for result in results if not result.ok]
    if failing:
        detail = "; ".join(f"{result.name}: {result.detail}" for result in failing)
        return problem_response(
            request, 503, "not-ready", detail, checks=checks, headers={"Retry-After": "5"}
        )
    return JSONResponse({"status": "ready", "checks": checks})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Text exposition format; answers within about a second even with the broker down."""
    state = request.app.state
    probe: QueueProbe | None = getattr(state, "queue_probe", None)
    if probe is None:
        probe = state.queue_probe = QueueProbe(state.broker)
    queue = await probe.snapshot()
    return Response(generate_latest() + queue_exposition(queue), media_type=CONTENT_TYPE_LATEST)
