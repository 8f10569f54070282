"""DomainApi: the agent through which jobs ask the domain application to do the work.

The contract (documented for the domain's developers in docs/domain-api.md)::

    POST {base_url}/jobs/actions/{action}
    Authorization: Bearer <client-credentials token>
    Idempotency-Key: <run_id>
    {"run_id": "...", "payload": {...}}

    200 {"summary": {"processed": 3, "errors": 0}, "content": "optional markdown",
         "artifacts": [{"name", "content_type", "content_base64"}]}

Every call of one run carries the same key, so the domain can treat a retry (ours, or
of the whole run) as the same request: that is what makes retrying safe.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from jobs_service.core.actions import ACTION_PATTERN
from jobs_service.core.errors import ConfigurationError, PermanentError, RetryLater
from jobs_service.core.ids import new_run_id
from jobs_service.core.logging import get_logger
from jobs_service.core.run_context import current_run
from jobs_service.core.summary import InvalidSummaryError, Summary, validate_summary
from jobs_service.infrastructure.http import OAuth2Token, check_response, retry_after_s, unreachable

if TYPE_CHECKING:
    from collections.abc import Mapping

    from jobs_service.core.settings import DomainApiSettings

__all__ = ["Artifact", "DomainAnswer", "DomainApi"]

_log = get_logger("jobs_service.agents.domain_api")
_ACTION = re.compile(ACTION_PATTERN)
_PROVIDER = "domain API"
# Waits longer than this are not spent inside a call: the run is retried later instead,
# so a worker slot is not held for a minute by one Retry-After.
_MAX_INLINE_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Artifact:
    """A file the domain attached to its answer (a report, an export)."""

    name: str
    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class DomainAnswer:
    """What an action returned: counts, optional markdown and files to deliver."""

    summary: Summary
    content: str | None = None
    artifacts: tuple[Artifact, ...] = ()


class DomainApi:
    """One per worker process; its HTTP connections and token are shared by all runs."""

    def __init__(self, settings: DomainApiSettings, http: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._http = http or httpx.AsyncClient(timeout=settings.timeout_s)
        self._owns_http = http is None
        self._token: OAuth2Token | None = None

    async def call(
        self, action: str, payload: Mapping[str, Any] | None = None, *, run_id: str | None = None
    ) -> DomainAnswer:
        """Run ``action`` in the domain; ``run_id`` defaults to the current run's."""
        if not _ACTION.fullmatch(action):
            msg = f"invalid domain action name {action!r} (lowercase words separated by /)"
            raise PermanentError(msg)
        url = f"{self._base_url()}/jobs/actions/{action}"
        if run_id is None:
            run = current_run()
            run_id = run.run_id if run is not None else new_run_id()
        body = orjson.dumps({"run_id": run_id, "payload": dict(payload or {})})
        headers = {
            "Idempotency-Key": run_id,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        response = await self._post_with_retries(url, body, headers)
        return _parse_answer(response)

    async def aclose(self) -> None:
        """Close the connections this agent opened."""
        if self._owns_http:
            await self._http.aclose()

    def _base_url(self) -> str:
        if not self._settings.base_url:
            msg = "domain_api.base_url is not set: [domain_api] base_url is the domain application"
            raise ConfigurationError(msg)
        return self._settings.base_url.rstrip("/")

    def _credential(self) -> OAuth2Token | None:
        settings = self._settings
        if settings.token_url is None:
            return None
        if self._token is None:
            missing = [
                f"domain_api.{name}"
                for name, value in (
                    ("client_id", settings.client_id),
                    ("client_secret", settings.client_secret),
                )
                if not value
            ]
            if missing:
                msg = f"{' and '.join(missing)} not set: domain_api.token_url needs them"
                raise ConfigurationError(msg)
            assert settings.client_id is not None  # noqa: S101 - checked above, for mypy
            assert settings.client_secret is not None  # noqa: S101
            self._token = OAuth2Token(
                self._http,
                token_url=settings.token_url,
                client_id=settings.client_id,
                client_secret=settings.client_secret.get_secret_value(),
                scope=settings.scope,
                setting="domain_api",
            )
        return self._token

    async def _post_with_retries(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        retries = self._settings.retries
        renewed = False
        attempt = 0
        while True:
            try:
                return await self._post(url, body, headers)
            except _Unauthorized as exc:
                if renewed:
                    msg = (
                        f"{_PROVIDER} refused a fresh token ({exc}); check domain_api.scope "
                        "and that the client is allowed to call the jobs actions"
                    )
                    raise PermanentError(msg) from None
                renewed = True  # one retry with a new token, not counted as a failure
            except RetryLater as exc:
                wait = exc.retry_after if exc.retry_after is not None else _backoff(attempt)
                if attempt >= retries or wait > _MAX_INLINE_WAIT_S:
                    raise
                attempt += 1
                _log.warning(
                    "domain-call-retry",
                    url=url,
                    attempt=attempt,
                    wait_s=round(wait, 2),
                    error=str(exc),
                )
                await asyncio.sleep(wait)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        credential = self._credential()
        token = await credential.token() if credential is not None else None
        if token is not None:
            headers = headers | {"Authorization": f"Bearer {token}"}
        try:
            response = await self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise unreachable(exc, provider=_PROVIDER) from None
        if response.status_code == 401 and credential is not None and token is not None:
            credential.invalidate(token)
            raise _Unauthorized(f"HTTP 401 from {url}")
        if response.status_code == 409:  # same Idempotency-Key still being processed
            # Left to the run's retry, no sooner than a call may take: the action is
            # running (an earlier call timed out on it), and retrying within seconds
            # would spend every retry while it still runs, ending the run dead.
            detail = f"{_PROVIDER} is still processing this Idempotency-Key (HTTP 409)"
            told = retry_after_s(response.headers) or 0.0
            raise RetryLater(detail, retry_after=max(told, self._settings.timeout_s))
        check_response(response, provider=_PROVIDER)
        return response


class _Unauthorized(Exception):  # noqa: N818 - internal signal
    """The domain refused the token; renew it once."""


def _backoff(attempt: int) -> float:
    # Full jitter keeps many workers that failed together from retrying together.
    return random.uniform(0, 0.25 * 2**attempt)  # noqa: S311 - not for security


def _parse_answer(response: httpx.Response) -> DomainAnswer:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        msg = f"{_PROVIDER} answered {response.status_code} without JSON"
        raise PermanentError(msg) from None
    if not isinstance(body, dict):
        msg = f"{_PROVIDER} answered a JSON {type(body).__name__}, not an object"
        raise PermanentError(msg)
    summary = body.get("summary", {})
    if isinstance(summary, dict):
        summary = {"errors": 0} | summary
    try:
        counts = validate_summary(summary)
    except InvalidSummaryError as exc:
        msg = f"{_PROVIDER} answer: {exc}"
        raise PermanentError(msg) from None
    content = body.get("content")
    if content is not None and not isinstance(content, str):
        msg = f"{_PROVIDER} answer: content must be a string (markdown)"
        raise PermanentError(msg)
    return DomainAnswer(counts, content or None, _artifacts(body.get("artifacts")))


def _artifacts(value: Any) -> tuple[Artifact, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        msg = f"{_PROVIDER} answer: artifacts must be a list"
        raise PermanentError(msg)
    found = []
    for index, item in enumerate(value):
        try:
            found.append(
                Artifact(
                    name=str(item["name"]),
                    content_type=str(item.get("content_type") or "application/octet-stream"),
                    content=base64.b64decode(item["content_base64"], validate=True),
                )
            )
        except (KeyError, TypeError, AttributeError, binascii.Error):
            msg = f"{_PROVIDER} answer: artifacts[{index}] needs name and base64 content_base64"
            raise PermanentError(msg) from None
    return tuple(found)
