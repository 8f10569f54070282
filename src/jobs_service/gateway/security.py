"""API-key authentication with scopes.

Keys are configured as SHA-256 digests, so the configuration file holds nothing that
grants access if leaked. Every configured digest is compared (constant-time, no early
exit), so response timing does not reveal how many keys exist or which one nearly
matched. With no keys configured the gateway trusts loopback callers only.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from fastapi import Request

from jobs_service.core.settings import ApiKey, Scope, is_loopback_host
from jobs_service.gateway.problems import Problem

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from jobs_service.core.settings import Settings

__all__ = ["LOCAL_PRINCIPAL", "authenticate", "holds_scope", "require_scope"]

LOCAL_PRINCIPAL = "local"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="jobs-service"'}


def _match(keys: list[ApiKey], presented: str) -> ApiKey | None:
    digest = hashlib.sha256(presented.encode()).hexdigest()
    found = None
    for key in keys:
        if hmac.compare_digest(key.sha256, digest):
            found = key
    return found


def authenticate(settings: Settings, request: Request, scope: Scope) -> str:
    """Return the caller's key name, or raise a 401/403 problem."""
    keys = settings.api_keys
    if not keys:
        client = request.client.host if request.client else ""
        if not is_loopback_host(client):
            raise Problem(
                403,
                "loopback-only",
                "no API keys are configured, so only loopback callers are served",
            )
        return LOCAL_PRINCIPAL
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(
            401, "unauthenticated", "send 'Authorization: Bearer <api key>'", headers=_CHALLENGE
        )
    key = _match(keys, token.strip())
    if key is None:
        raise Problem(401, "invalid-api-key", "the API key is not valid", headers=_CHALLENGE)
    # Known from here on, even if refused: the audit log names who tried.
    request.state.principal = key.name
    request.state.api_key = key
    if not key.grants(scope):
        raise Problem(
            403,
            "insufficient-scope",
            f"API key {key.name!r} lacks the {scope!r} scope",
            scope=scope,
        )
    return key.name


def holds_scope(request: Request, scope: Scope) -> bool:
    """Whether the caller of an authenticated request also holds ``scope``: an answer
    carries no more than the caller could read (a loopback caller without configured
    keys holds every scope)."""
    key: ApiKey | None = getattr(request.state, "api_key", None)
    if key is None:
        return not request.app.state.settings.api_keys
    return key.grants(scope)


def require_scope(scope: Scope) -> Callable[[Request], Awaitable[str]]:
    """A dependency that authenticates the request for ``scope``."""

    async def dependency(request: Request) -> str:
        principal = authenticate(request.app.state.settings, request, scope)
        request.state.principal = principal
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency
