"""Map a provider's HTTP answer onto the run's error vocabulary.

5xx, 429 and transport failures are :class:`RetryLater` (with the provider's
``Retry-After``), other 4xx are :class:`PermanentError`: retrying a request the provider
called invalid only repeats the failure.
"""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING

import orjson

from jobs_service.core.errors import PermanentError, RetryLater

if TYPE_CHECKING:
    import httpx

__all__ = ["check_response", "error_detail", "retry_after_s", "unreachable"]

_MAX_RETRY_AFTER_S = 3600.0
_MAX_DETAIL = 300


def retry_after_s(headers: httpx.Headers) -> float | None:
    """``Retry-After`` (delta-seconds or an HTTP date) in seconds, capped at an hour."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN  # noqa: PLR0124
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


def error_detail(response: httpx.Response) -> str:
    """A short, log-safe description of an error answer (problem+json or OAuth aware)."""
    text = ""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        text = response.text.strip()
    else:
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict):  # Graph: {"error": {"code", "message"}}
                text = f"{error.get('code', '')}: {error.get('message', '')}"
            else:  # OAuth2 and problem+json
                parts = [body.get(key) for key in ("error", "title", "detail", "error_description")]
                text = ": ".join(str(part) for part in parts if part)
    text = " ".join(text.split())[:_MAX_DETAIL]
    return f"HTTP {response.status_code}" + (f" ({text})" if text else "")


def check_response(response: httpx.Response, *, provider: str) -> None:
    """Raise the run error an unsuccessful answer amounts to; return on 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = f"{provider} answered {error_detail(response)}"
    if status == 429 or status >= 500 or status == 408:
        raise RetryLater(detail, retry_after=retry_after_s(response.headers))
    raise PermanentError(detail)


def unreachable(exc: Exception, *, provider: str) -> RetryLater:
    """The error for a call that got no answer (connect error, timeout, reset)."""
    kind = type(exc).__name__
    return RetryLater(f"{provider} unreachable: {kind}: {exc}"[:_MAX_DETAIL])
