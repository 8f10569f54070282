"""Secrets stay out of logs."""

from __future__ import annotations

import logging

import pytest

from jobs_service.core.logging import configure_logging, get_logger
from jobs_service.core.redaction import REDACTED, redact_headers, redact_url


def test_sensitive_headers_are_redacted() -> None:
    """Names containing token, authorization, cookie, secret, signature or hmac are
    hidden."""
    headers = redact_headers(
        {
            "Authorization": "Bearer k",
            "X-Hub-Signature-256": "sha256=1",
            "Cookie": "a=b",
            "X-Client-Secret": "s",
            "X-Token": "t",
            "X-Shopify-Hmac-Sha256": "h",
            "Content-Type": "application/json",
        }
    )
    assert headers["Content-Type"] == "application/json"
    assert {k for k, v in headers.items() if v == REDACTED} == {
        "Authorization",
        "X-Hub-Signature-256",
        "Cookie",
        "X-Client-Secret",
        "X-Token",
        "X-Shopify-Hmac-Sha256",
    }


def test_url_passwords_are_redacted() -> None:
    """The password of a URL is hidden, the rest kept."""
    assert redact_url("postgresql+asyncpg://app:hunter2@db:5432/jobs") == (
        f"postgresql+asyncpg://app:{REDACTED}@db:5432/jobs"
    )
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://jobs@db/jobs?password=hunter2&ssl=require",
            f"postgresql+asyncpg://jobs@db/jobs?password={REDACTED}&ssl=require",
        ),
        (
            "postgresql+asyncpg://jobs:pw@db/jobs?sslpassword=k3y",
            f"postgresql+asyncpg://jobs:{REDACTED}@db/jobs?sslpassword={REDACTED}",
        ),
        ("redis://cache:6379/0?token=abc&db=1", f"redis://cache:6379/0?token={REDACTED}&db=1"),
        ("redis://cache:6379/0?socket_timeout=5", "redis://cache:6379/0?socket_timeout=5"),
        ("sqlite+aiosqlite:///./var/jobs.db", "sqlite+aiosqlite:///./var/jobs.db"),
    ],
)
def test_secrets_in_a_url_query_are_redacted(url: str, shown: str) -> None:
    """Drivers also take a password as a query parameter; ``jobsctl check`` and the
    start-up log print URLs."""
    assert redact_url(url) == shown


def _verify_signature(headers: dict[str, str]) -> None:
    signature = headers["x-hub-signature-256"]
    raise ValueError("signature does not match " + signature[:0])


def test_a_console_traceback_shows_no_local_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a terminal a traceback used to list every frame's locals, and the request
    path's frames hold raw headers: a signature or an API key in clear, which the
    redaction of log fields never sees."""
    # Built at run time: the traceback quotes source lines, which must not count.
    signature, api_key = "sha256=" + "5ec7e7" * 8, "key-" + "0a1b" * 4
    headers = {"x-hub-signature-256": signature, "authorization": f"Bearer {api_key}"}
    configure_logging("console", "info")
    try:
        try:
            _verify_signature(headers)
        except ValueError:
            get_logger("jobs_service.gateway.http").exception("unhandled-error")
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        output = capsys.readouterr().err
    finally:
        configure_logging("json", "info")
    assert output.count("_verify_signature") >= 2  # both tracebacks were written
    assert signature not in output
    assert api_key not in output
