"""process_webhook_event: a route's domain action runs and its answer reaches Teams."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from jobs_service.infrastructure.models import Delivery, JobRun, WebhookEvent
from tests.conftest import asgi_client, serve_app
from tests.support.fakes.domain import FakeDomainApi
from tests.support.fakes.server import serve
from tests.support.fakes.teams import FakeTeamsWorkflows
from tests.support.fakes.tokens import FakeTokenEndpoint
from tests.unit.gateway.test_webhooks_api import SW_SECRET, standard

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from fastapi import FastAPI

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio


class Outside:
    def __init__(self) -> None:
        self.tokens = FakeTokenEndpoint()
        self.domain = FakeDomainApi(tokens=self.tokens)
        self.teams = FakeTeamsWorkflows()
        self.urls: dict[str, str] = {}


@pytest.fixture
def outside() -> Iterator[Outside]:
    world = Outside()
    with (
        serve(world.tokens.app) as tokens,
        serve(world.domain.app) as domain,
        serve(world.teams.app) as teams,
    ):
        world.urls = {"token": f"{tokens}/token", "domain": domain, "teams": teams}
        yield world


def _settings(make_settings: Callable[..., Settings], outside: Outside) -> Settings:
    crm: dict[str, Any] = {
        "scheme": "standard",
        "secrets": [SW_SECRET],
        "event_type": "json:/type",
        "routes": {
            "customer_signed_up": {
                "task": "process_webhook_event",
                "action": "crm/create-lead",
                "deliver_to": {"teams_channel": "sales"},
            }
        },
    }
    return make_settings(
        webhooks={"sources": {"crm": crm}},
        domain_api={
            "base_url": outside.urls["domain"],
            "token_url": outside.urls["token"],
            "client_id": outside.tokens.client_id,
            "client_secret": outside.tokens.client_secret,
        },
        channels={
            "teams": {"sales": {"webhook_url": outside.teams.url(outside.urls["teams"], "sales")}}
        },
    )


async def _settle(app: FastAPI) -> None:
    await broker.wait_all()  # type: ignore[attr-defined]
    await app.state.runtime.recorder.wait_flushed()


async def test_a_routed_event_calls_its_action_and_is_delivered_to_teams(
    make_settings: Callable[..., Settings], outside: Outside
) -> None:
    app = create_app(
        _settings(make_settings, outside), broker=broker, embedded=True, scheduler=False
    )
    body = json.dumps({"type": "customer_signed_up", "data": {"email": "a@example.com"}}).encode()
    async with serve_app(app, client_host="203.0.113.9") as client:
        response = await client.post("/webhooks/crm", content=body, headers=standard(body, "m1"))
        await _settle(app)
        async with app.state.runtime.database.sessions() as session:
            event = (await session.execute(select(WebhookEvent))).scalar_one()
            run = (await session.execute(select(JobRun))).scalar_one()
            deliveries = list((await session.execute(select(Delivery))).scalars())
        async with asgi_client(app) as operator:  # the API serves loopback callers
            detail = (await operator.get(f"/v1/runs/{run.run_id}")).json()
    assert response.status_code == 202, response.text
    [call] = outside.domain.calls_of("crm/create-lead")
    assert call.idempotency_key == run.run_id
    assert call.body["payload"]["event"]["body"] == {
        "type": "customer_signed_up",
        "data": {"email": "a@example.com"},
    }
    assert call.body["payload"]["event"]["source"] == "crm"
    assert (run.task, run.status, run.source) == ("process_webhook_event", "succeeded", "webhook")
    assert run.summary == {"processed": 1, "delivered": 1, "errors": 0}
    assert event.status == "processed"
    [card] = outside.teams.cards("sales")
    assert card["body"][1]["text"] == f"**crm/create-lead** done for run `{run.run_id}`"
    assert [(d.channel, d.target, d.status, d.attempts) for d in deliveries] == [
        ("teams", "sales", "sent", 1)
    ]
    assert detail["deliveries"][0]["status"] == "sent"
    assert detail["content"].startswith("**crm/create-lead**")
    assert "sig=" not in json.dumps(detail)


async def test_an_unrouted_event_goes_to_the_default_action(
    make_settings: Callable[..., Settings], outside: Outside
) -> None:
    app = create_app(
        _settings(make_settings, outside), broker=broker, embedded=True, scheduler=False
    )
    body = json.dumps({"type": "customer_left"}).encode()
    async with serve_app(app, client_host="203.0.113.9") as client:
        response = await client.post("/webhooks/crm", content=body, headers=standard(body, "m2"))
        await _settle(app)
    assert response.status_code == 202
    assert len(outside.domain.calls_of("webhooks/crm")) == 1
    assert outside.teams.cards("sales") == []  # no deliver_to on the default route


async def test_a_teams_failure_retries_the_run_and_sends_one_card(
    make_settings: Callable[..., Settings], outside: Outside
) -> None:
    outside.teams.failures = [503]
    settings = _settings(make_settings, outside)
    settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"retry_backoff_s": 0.05})}
    )
    app = create_app(settings, broker=broker, embedded=True, scheduler=False)
    body = json.dumps({"type": "customer_signed_up"}).encode()
    async with serve_app(app, client_host="203.0.113.9") as client:
        await client.post("/webhooks/crm", content=body, headers=standard(body, "m3"))
        run_id = None
        for _ in range(100):
            await _settle(app)
            async with app.state.runtime.database.sessions() as session:
                run = (await session.execute(select(JobRun))).scalar_one()
            run_id = run.run_id
            if run.status == "succeeded":
                break
            import anyio  # noqa: PLC0415

            await anyio.sleep(0.05)
    assert run.status == "succeeded", run.error
    assert run.attempt == 2
    assert len(outside.teams.cards("sales")) == 1
    calls = outside.domain.calls_of("crm/create-lead")
    assert [c.idempotency_key for c in calls] == [run_id, run_id]


async def test_a_number_beyond_64_bits_reaches_the_action_with_every_digit(
    make_settings: Callable[..., Settings], outside: Outside
) -> None:
    """The event's body went to the domain action parsed and written again, which turned
    an integer beyond 64 bits into a float (an amount in wei lost its last digits); it
    now goes as the sender wrote it."""
    app = create_app(
        _settings(make_settings, outside), broker=broker, embedded=True, scheduler=False
    )
    amount = 10**20 + 1
    body = json.dumps({"type": "customer_signed_up", "amount_wei": amount}).encode()
    async with serve_app(app, client_host="203.0.113.9") as client:
        response = await client.post("/webhooks/crm", content=body, headers=standard(body, "m2"))
        await _settle(app)
    assert response.status_code == 202, response.text
    [call] = outside.domain.calls_of("crm/create-lead")
    assert call.body["payload"]["event"]["body"] == {
        "type": "customer_signed_up",
        "amount_wei": amount,
    }
