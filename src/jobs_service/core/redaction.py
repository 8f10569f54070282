"""Keeping secrets out of logs, errors and stored headers."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "is_sensitive_header",
    "redact_headers",
    "redact_url",
    "treat_as_sensitive",
]

REDACTED = "[redacted]"
_SENSITIVE_PARTS = (
    "token",
    "authorization",
    "cookie",
    "secret",
    "signature",
    "api-key",
    "hmac",  # X-Shopify-Hmac-Sha256 and the like
)
#: Header names configured to carry a secret (a webhook source's ``signature_header``),
#: whatever they are called; lowercase.
_CONFIGURED: set[str] = set()
#: One search instead of a loop over the parts, remembered per name: every request's
#: headers pass through here (the request log, webhook storage).
_SENSITIVE = re.compile("|".join(map(re.escape, _SENSITIVE_PARTS)), re.IGNORECASE)


def treat_as_sensitive(names: Iterable[str]) -> None:
    """Also redact these headers (the configured ones a sender signs with, which may be
    named anything: ``X-Acme-Auth``)."""
    _CONFIGURED.update(name.lower() for name in names)
    is_sensitive_header.cache_clear()


@functools.lru_cache(maxsize=512)  # bounded: header names come from callers
def is_sensitive_header(name: str) -> bool:
    """A header whose name contains token, authorization, cookie, secret, signature,
    api-key or hmac, or one configured as a signature header."""
    return _SENSITIVE.search(name) is not None or name.lower() in _CONFIGURED


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
