"""Webhook source settings: what the gateway would refuse or mishandle is refused by the
settings or reported by `jobsctl check`, never found out per request."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from jobs_service.broker import broker
from jobs_service.cli.config_check import check_settings
from jobs_service.core.errors import ConfigurationError
from jobs_service.core.settings import Settings
from jobs_service.gateway import create_app
from jobs_service.gateway.app import build_webhook_schemes
from jobs_service.infrastructure.models import WebhookEvent
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.anyio

TASKS = ["record_webhook", "process_webhook_event"]


@pytest.mark.parametrize(
    "source",
    [
        # The very secret the suite's own "complete configuration passes" check uses.
        {"scheme": "standard", "secrets": ["whsec-billing-0123"]},
        {"scheme": "teams", "secrets": ["not base64!"]},
    ],
    ids=["standard-secret", "teams-token"],
)
def test_check_reports_what_the_gateway_refuses_to_start_with(source: dict[str, Any]) -> None:
    settings = Settings(
        webhooks={"sources": {"billing": {**source, "default_task": "record_webhook"}}}
    )
    with pytest.raises(ConfigurationError):  # the gateway will not start
        build_webhook_schemes(settings)
    problems = [f for f in check_settings(settings, TASKS) if f.level == "problem"]
    assert problems, "jobsctl check passes a configuration the gateway refuses"


async def test_a_signature_header_with_a_stray_space_is_still_redacted(
    make_settings: Callable[..., Settings],
) -> None:
    """HmacSha256 strips the configured name; the redaction list does not."""
    secret = "acme-secret"
    settings = make_settings(
        webhooks={
            "sources": {
                "acme": {
                    "scheme": "hmac-sha256",
                    "secrets": [secret],
                    "signature_header": "X-Audit-Mac ",
                    "default_task": "record_webhook",
                }
            }
        }
    )
    app = create_app(settings, broker=broker, embedded=True, scheduler=False)
    body = json.dumps({"id": "evt_1", "type": "ping"}).encode()
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    async with serve_app(app, client_host="203.0.113.9") as client:
        response = await client.post("/webhooks/acme", content=body, headers={"X-Audit-Mac": mac})
        async with app.state.runtime.database.sessions() as session:
            event = (await session.execute(select(WebhookEvent))).scalar_one()
    assert response.status_code == 202, response.text
    assert event.headers["x-audit-mac"] == "[redacted]", event.headers


def test_a_graph_event_id_cannot_come_from_a_header() -> None:
    """One POST carries many notifications and one set of headers: every notification
    after the first would share the first's id, be answered `duplicate` and dropped."""
    source = {
        "scheme": "graph",
        "secrets": ["cs-secret"],
        "event_id": "header:x-request-id",
        "default_task": "record_webhook",
    }
    with pytest.raises(ValidationError, match="from each notification"):
        Settings(webhooks={"sources": {"mail": source}})
    Settings(webhooks={"sources": {"mail": {**source, "event_id": "json:/resource"}}})


@pytest.mark.parametrize(
    "header", ["   ", "X Mac", "X-Mac:", "X-Mäc"], ids=["blank", "space", "colon", "non-ascii"]
)
def test_a_signature_header_must_be_a_header_name(header: str) -> None:
    with pytest.raises(ValidationError, match="not an HTTP header name"):
        Settings(
            webhooks={
                "sources": {
                    "acme": {"scheme": "hmac-sha256", "secrets": ["s"], "signature_header": header}
                }
            }
        )


@pytest.mark.parametrize(
    "name",
    ["acme/eu", "-acme", ".", "acme eu", "acme%2Feu", "x" * 101, ""],
    ids=["slash", "leading-dash", "dot", "space", "percent", "101-chars", "empty"],
)
def test_a_source_name_must_be_one_routable_path_segment(name: str) -> None:
    """`/webhooks/acme/eu` can never be routed, and `webhook_events.source` holds 100
    characters: such a source would answer 404 or 500 to every delivery."""
    with pytest.raises(ValidationError, match="source name"):
        Settings(webhooks={"sources": {name: {"scheme": "github", "secrets": ["s"]}}})
