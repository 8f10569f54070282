"""Keeping secrets out of logs, errors and stored headers."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
    """Hide the secrets of a URL: the password in ``postgresql://user:pw@host/db``, and
    query parameters that carry one (``?password=…``, ``?sslpassword=…``, ``?token=…``),
    which drivers accept as well."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    secret_query = any(_is_secret_parameter(name) for name, _ in query)
    if parts.password is None and not secret_query:
        return url  # as given: rebuilt, ``sqlite:///./x.db`` would lose its empty host
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:{REDACTED}@{netloc}")
    if secret_query:
        hidden = [(name, REDACTED if _is_secret_parameter(name) else v) for name, v in query]
        parts = parts._replace(query=urlencode(hidden, safe="[]"))
    return urlunsplit(parts)


def _is_secret_parameter(name: str) -> bool:
    lowered = name.lower()
    return "pass" in lowered or "pwd" in lowered or _SENSITIVE.search(lowered) is not None
