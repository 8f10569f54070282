"""OAuth2 access tokens for the agents: cached, refreshed once however many ask.

A worker runs up to ``worker.concurrency`` tasks at once. When the token is missing or
close to expiry they all need a new one at the same moment; the first caller starts one
request and every other caller awaits that same request, so the token endpoint sees one
call, not fifty (and a failure reaches all of them at once instead of being retried
fifty times in a row).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httpx
import orjson

from jobs_service.core.errors import ConfigurationError, PermanentError, RetryLater
from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.http.errors import error_detail, retry_after_s, unreachable

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["OAuth2Token"]

_log = get_logger("jobs_service.oauth")
_DEFAULT_LIFETIME_S = 3600.0
_REFRESH_MARGIN_S = 60.0
# Answers that mean "your credentials or grant are wrong": fixing them is an operator's job.
_CREDENTIAL_ERRORS = frozenset(
    {"invalid_client", "unauthorized_client", "invalid_scope", "invalid_grant", "invalid_request"}
)


class OAuth2Token:
    """One OAuth2 credential: ``client_credentials``, or ``refresh_token`` (delegated).

    ``setting`` is the configuration section named in errors (``domain_api``, ``graph``)
    so an operator knows which keys to fix.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None,
        setting: str,
        refresh_token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._setting = setting
        self._refresh_token = refresh_token
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._inflight: asyncio.Future[str] | None = None

    async def token(self) -> str:
        """A valid access token, from the cache while it has more than a minute left."""
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        if self._inflight is None:
            # A task of its own: a caller cancelled mid-request cancels only its wait.
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(self._fetched)
        return await asyncio.shield(self._inflight)

    def _fetched(self, request: asyncio.Future[str]) -> None:
        self._inflight = None
        if not request.cancelled():
            request.exception()  # every waiter has it; mark it retrieved

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (the resource answered 401 to it); the next call fetches anew."""
        if self._token == token:
            self._token = None

    def _form(self) -> dict[str, str]:
        form = {"client_id": self._client_id, "client_secret": self._client_secret}
        if self._refresh_token is not None:
            form |= {"grant_type": "refresh_token", "refresh_token": self._refresh_token}
        else:
            form["grant_type"] = "client_credentials"
        if self._scope:
            form["scope"] = self._scope
        return form

    async def _fetch(self) -> str:
        provider = f"token endpoint of [{self._setting}]"
        started = self._clock()
        try:
            response = await self._http.post(
                self._token_url, data=self._form(), headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise unreachable(exc, provider=provider) from None
        if response.status_code == 429 or response.status_code >= 500:
            detail = f"{provider} answered {error_detail(response)}"
            raise RetryLater(detail, retry_after=retry_after_s(response.headers))
        body = _json_object(response)
        if response.status_code != 200:
            code = str(body.get("error", ""))
            if code in ("temporarily_unavailable", "server_error"):  # RFC 6749 §5.2
                detail = f"{provider} answered {error_detail(response)}"
                raise RetryLater(detail, retry_after=retry_after_s(response.headers))
            detail = f"{provider} refused the credentials: {error_detail(response)}"
            if self._refresh_token is not None and code == "invalid_grant":
                # Delegated: the refresh token expired (unused for its lifetime) or was
                # revoked; the app's own credentials are not what is wrong.
                raise ConfigurationError(
                    f"{detail}; the refresh token expired or was revoked: renew "
                    f"{self._setting}.delegated_refresh_token"
                )
            if code in _CREDENTIAL_ERRORS or response.status_code in (400, 401, 403):
                raise ConfigurationError(
                    f"{detail}; check {self._setting}.client_id and {self._setting}.client_secret"
                )
            raise PermanentError(detail)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            msg = f"{provider} answered 200 without an access_token"
            raise PermanentError(msg)
        lifetime = _lifetime(body.get("expires_in"))
        # Refresh a minute early, or halfway through a very short lifetime.
        self._refresh_at = started + lifetime - min(_REFRESH_MARGIN_S, lifetime / 2)
        rotated = body.get("refresh_token")
        if self._refresh_token is not None and isinstance(rotated, str) and rotated:
            self._refresh_token = rotated
        self._token = token
        _log.info("oauth-token-fetched", setting=self._setting, expires_in_s=int(lifetime))
        return token


def _json_object(response: httpx.Response) -> dict[str, object]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _lifetime(value: object) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _DEFAULT_LIFETIME_S
    return seconds if seconds > 0 else _DEFAULT_LIFETIME_S
