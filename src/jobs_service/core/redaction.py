"""Keeping secrets out of logs, errors and stored headers."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = ["REDACTED", "is_sensitive_header", "redact_headers", "redact_url"]

REDACTED = "[redacted]"
_SENSITIVE_PARTS = ("token", "authorization", "cookie", "secret", "signature", "api-key")
#: One search instead of a loop over the parts, remembered per name: every request's
#: headers pass through here (the request log, webhook storage).
_SENSITIVE = re.compile("|".join(map(re.escape, _SENSITIVE_PARTS)), re.IGNORECASE)


@functools.lru_cache(maxsize=512)  # bounded: header names come from callers
def is_sensitive_header(name: str) -> bool:
    """A header whose name contains token, authorization, cookie, secret or signature."""
    return _SENSITIVE.search(name) is not None


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Copy headers with the values of sensitive ones replaced."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {name: (REDACTED if is_sensitive_header(name) else value) for name, value in items}


def redact_url(url: str) -> str:
    """Hide the password of a URL such as ``postgresql://user:pw@host/db``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{netloc}"))
