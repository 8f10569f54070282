"""FastAPI dependencies resolving the process's runtime and client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from taskiq import AsyncBroker

    from jobs_service.client import JobsClient
    from jobs_service.infrastructure.runtime import Runtime

__all__ = ["get_broker", "get_client", "get_runtime"]


def get_runtime(request: Request) -> Runtime:
    """The runtime the lifespan attached."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_client(request: Request) -> JobsClient:
    """The producer client bound to this app's broker and database."""
    client: JobsClient = request.app.state.client
    return client


def get_broker(request: Request) -> AsyncBroker:
    """The broker this app enqueues on."""
    broker: AsyncBroker = request.app.state.broker
    return broker
