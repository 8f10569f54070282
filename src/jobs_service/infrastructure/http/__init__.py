"""Outbound HTTP shared by the agents: provider error mapping and OAuth2 tokens."""

from __future__ import annotations

from jobs_service.infrastructure.http.errors import (
    check_response,
    error_detail,
    retry_after_s,
    unreachable,
)
from jobs_service.infrastructure.http.oauth import OAuth2Token

__all__ = ["OAuth2Token", "check_response", "error_detail", "retry_after_s", "unreachable"]
