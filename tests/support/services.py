"""The real PostgreSQL and Redis the integration and e2e tiers use.

Each test session gets its own PostgreSQL database and Redis key prefix, so parallel
runs on one machine never see each other's data. Addresses come from
``JOBS_TEST_DATABASE_URL`` / ``JOBS_TEST_REDIS_URL`` or default to the local services.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["ServiceStatus", "admin_database_url", "probe_services", "redis_url", "session_tag"]

session_tag = uuid.uuid4().hex[:10]


def admin_database_url() -> str:
    """An asyncpg URL to a database we may CREATE DATABASE from."""
    return os.environ.get(
        "JOBS_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )


def redis_url() -> str:
    """Redis for tests (keys are prefixed per session)."""
    return os.environ.get("JOBS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str, default_port: int) -> str | None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return None
    except OSError as exc:
        return f"{host}:{port} ({exc.strerror or exc})"


@dataclass(frozen=True)
class ServiceStatus:
    """Which services answer; ``missing`` explains the ones that do not."""

    postgres: bool
    redis: bool
    missing: tuple[str, ...]


def probe_services() -> ServiceStatus:
    """TCP-probe PostgreSQL and Redis once per session."""
    missing = []
    pg = _reachable(admin_database_url(), 5432)
    if pg:
        missing.append(f"PostgreSQL at {pg}")
    rd = _reachable(redis_url(), 6379)
    if rd:
        missing.append(f"Redis at {rd}")
    return ServiceStatus(postgres=pg is None, redis=rd is None, missing=tuple(missing))
