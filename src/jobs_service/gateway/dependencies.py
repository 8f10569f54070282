"""FastAPI dependencies resolving objects the lifespan attached to the app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from jobs_service.client import JobsClient

__all__ = ["get_client"]


def get_client(request: Request) -> JobsClient:
    """The producer client bound to this app's broker and runtime."""
    client: JobsClient = request.app.state.client
    return client
