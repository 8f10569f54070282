"""The longest source name the settings accept fits ``webhook_events.source`` on
PostgreSQL (which, unlike SQLite, enforces the length)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from jobs_service.broker import broker
from jobs_service.core.settings import SOURCE_NAME_MAX, Settings
from jobs_service.gateway import create_app
from jobs_service.infrastructure.models import WebhookEvent, column_length
from tests.conftest import serve_app
from tests.unit.gateway.test_webhooks_api import SW_SECRET, standard

pytestmark = pytest.mark.anyio

NAME = "billing-" + "x" * (SOURCE_NAME_MAX - 8)


async def test_the_longest_source_name_is_stored(pg_url: str) -> None:
    settings = Settings(
        database_url=pg_url,
        webhooks={
            "sources": {
                NAME: {
                    "scheme": "standard",
                    "secrets": [SW_SECRET],
                    "default_task": "record_webhook",
                }
            }
        },
    )
    assert column_length(WebhookEvent, "source") == len(NAME)
    app = create_app(settings, broker=broker, embedded=True, scheduler=False)
    body = json.dumps({"type": "invoice.paid"}).encode()
    async with serve_app(app, client_host="203.0.113.9") as client:
        response = await client.post(f"/webhooks/{NAME}", content=body, headers=standard(body))
        assert response.status_code == 202, response.text
        async with app.state.runtime.database.sessions() as session:
            stored = (
                await session.execute(select(WebhookEvent.id).where(WebhookEvent.source == NAME))
            ).all()
    assert len(stored) == 1
