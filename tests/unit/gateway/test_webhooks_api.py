"""POST /webhooks/{source}: verify, persist, dedupe, enqueue — and every refusal."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select

from jobs_service.broker import broker
from jobs_service.core.errors import ConfigurationError
from jobs_service.gateway import create_app
from jobs_service.infrastructure.models import JobRun, WebhookEvent
from tests.conftest import asgi_client, serve_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    import httpx
    from fastapi import FastAPI

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

SW_KEY = b"billing-signing-key-0123456789ab"
SW_SECRET = "whsec_" + base64.b64encode(SW_KEY).decode()
GH_SECRET = "gh-secret"
GRAPH_STATE = "client-state-secret"
SOURCES: dict[str, Any] = {
    "billing": {
        "scheme": "standard",
        "secrets": [SW_SECRET],
        "default_task": "record_webhook",
        "routes": {"invoice.paid": "record_webhook"},
        "max_body_bytes": 4096,
    },
    "gh": {"scheme": "github", "secrets": [GH_SECRET], "default_task": "record_webhook"},
    "graph": {"scheme": "graph", "secrets": [GRAPH_STATE], "default_task": "record_webhook"},
}


def standard(
    body: bytes, msg_id: str = "msg_1", ts: int | None = None, key: bytes = SW_KEY
) -> dict[str, str]:
    """Standard Webhooks headers, signed as the spec describes (independently of us)."""
    ts = ts if ts is not None else int(time.time())
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


async def _service(make_settings: Callable[..., Settings], **overrides: Any) -> FastAPI:
    settings = make_settings(webhooks={"sources": overrides.pop("sources", SOURCES)}, **overrides)
    return create_app(settings, broker=broker, embedded=True, scheduler=False)


async def _settled(app: FastAPI) -> None:
    await broker.wait_all()  # type: ignore[attr-defined]
    await app.state.runtime.recorder.wait_flushed()


async def _rows(app: FastAPI) -> tuple[list[WebhookEvent], list[JobRun]]:
    await _settled(app)
    async with app.state.runtime.database.sessions() as session:
        events = list(
            (await session.execute(select(WebhookEvent).order_by(WebhookEvent.id))).scalars()
        )
        runs = list(
            (await session.execute(select(JobRun).where(JobRun.source == "webhook"))).scalars()
        )
    return events, runs


@pytest.fixture
async def billing(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = await _service(make_settings)
    async with serve_app(app, client_host="203.0.113.9") as client:  # senders are remote
        yield app, client


async def test_a_signed_event_is_stored_enqueued_and_processed(
    billing: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """202 accepted; the routed task runs with event_id; the event ends processed."""
    app, client = billing
    body = json.dumps({"type": "invoice.paid", "data": {"id": "in_1"}}).encode()
    response = await client.post("/webhooks/billing", content=body, headers=standard(body))
    events, runs = await _rows(app)
    assert response.status_code == 202, response.text
    assert response.json() == {"event_id": events[0].id, "status": "accepted"}
    assert (events[0].external_id, events[0].event_type) == ("msg_1", "invoice.paid")
    assert events[0].status == "processed"
    assert events[0].headers["webhook-signature"] == "[redacted]"
    assert [(r.task, r.kwargs, r.webhook_event_id, r.status) for r in runs] == [
        ("record_webhook", {"event_id": events[0].id}, events[0].id, "succeeded")
    ]
    assert events[0].run_id == runs[0].run_id


async def test_a_repeated_delivery_is_a_duplicate_without_a_second_run(
    billing: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """The same webhook-id twice (even re-signed later): one event, one run."""
    app, client = billing
    body = json.dumps({"type": "invoice.paid"}).encode()
    first = await client.post("/webhooks/billing", content=body, headers=standard(body))
    again = await client.post(
        "/webhooks/billing", content=body, headers=standard(body, ts=int(time.time()) + 5)
    )
    events, runs = await _rows(app)
    assert first.json()["status"] == "accepted"
    assert again.status_code == 202
    assert again.json() == {"event_id": first.json()["event_id"], "status": "duplicate"}
    assert len(events) == 1
    assert len(runs) == 1


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda body, headers: (body + b" ", headers), "bad_signature"),
        (lambda body, headers: (body, standard(body, key=b"x" * 32)), "bad_signature"),
        (
            lambda body, headers: (body, standard(body, ts=int(time.time()) - 3600)),
            "stale_timestamp",
        ),
        (
            lambda body, headers: (body, standard(body, ts=int(time.time()) + 3600)),
            "future_timestamp",
        ),
        (
            lambda body, headers: (
                body,
                {k: v for k, v in headers.items() if k != "webhook-signature"},
            ),
            "missing_header",
        ),
    ],
)
async def test_unverifiable_requests_are_401_and_store_nothing(
    billing: tuple[FastAPI, httpx.AsyncClient],
    mangle: Any,
    reason: str,
) -> None:
    """Tampered body, wrong secret, stale or future timestamp, missing header: 401."""
    app, client = billing
    body = json.dumps({"type": "invoice.paid"}).encode()
    sent_body, headers = mangle(body, standard(body))
    response = await client.post("/webhooks/billing", content=sent_body, headers=headers)
    events, runs = await _rows(app)
    assert response.status_code == 401
    assert response.json()["reason"] == reason
    assert SW_SECRET not in response.text
    assert events == []
    assert runs == []


async def test_refusals_before_verification(billing: tuple[FastAPI, httpx.AsyncClient]) -> None:
    """Unknown source 404; too large 413 (declared or streamed); bad JSON 400."""
    app, client = billing
    unknown = await client.post("/webhooks/nobody", content=b"{}")
    big = b'{"x": "' + b"a" * 5000 + b'"}'
    declared = await client.post("/webhooks/billing", content=big, headers=standard(big))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"a" * 1000

    streamed = await client.post("/webhooks/billing", content=chunks())
    garbage = b"{not json"
    malformed = await client.post("/webhooks/billing", content=garbage, headers=standard(garbage))
    events, _ = await _rows(app)
    assert unknown.status_code == 404
    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert malformed.status_code == 400
    assert events == []


def github(body: bytes, delivery: str, event: str) -> dict[str, str]:
    """A GitHub delivery's headers, signed as GitHub signs (the body only)."""
    signature = "sha256=" + hmac.new(GH_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": signature,
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": event,
    }


async def test_github_events_are_known_by_their_body_and_typed_by_their_header(
    billing: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """GitHub signs the body only: its SHA-256 is the event id, X-GitHub-Event the type,
    and the delivery id stays visible in the stored headers."""
    app, client = billing
    body = b'{"action": "opened"}'
    response = await client.post(
        "/webhooks/gh", content=body, headers=github(body, "d-42", "pull_request")
    )
    events, _ = await _rows(app)
    assert response.status_code == 202
    assert (events[0].external_id, events[0].event_type) == (
        "sha256:" + hashlib.sha256(body).hexdigest(),
        "pull_request",
    )
    assert events[0].headers["x-github-delivery"] == "d-42"


async def test_a_captured_github_delivery_sent_again_starts_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    """X-GitHub-Delivery and X-GitHub-Event are not signed: one captured delivery, sent
    again with new delivery ids (and another event type to reach another route), was a
    new event and a new run each time. The body decides: each is a duplicate of the
    stored event, which keeps its type and its one run."""
    routes = {"push": "record_webhook", "issues": "process_webhook_event"}
    sources = {"gh": {**SOURCES["gh"], "routes": routes}}
    app = await _service(make_settings, sources=sources)
    body = b'{"ref": "refs/heads/main", "after": "0a1b2c"}'
    async with serve_app(app, client_host="203.0.113.9") as client:
        genuine = await client.post(
            "/webhooks/gh", content=body, headers=github(body, "d-1", "push")
        )
        again = [
            await client.post(
                "/webhooks/gh", content=body, headers=github(body, f"forged-{n}", "issues")
            )
            for n in range(3)
        ]
        events, runs = await _rows(app)
    assert genuine.json()["status"] == "accepted"
    assert [a.json() for a in again] == [
        {"event_id": genuine.json()["event_id"], "status": "duplicate"}
    ] * 3
    assert [(e.event_type, e.task) for e in events] == [("push", "record_webhook")]
    assert len(runs) == 1


async def test_graph_handshake_and_batches(billing: tuple[FastAPI, httpx.AsyncClient]) -> None:
    """The validation token is echoed as text; each notification becomes an event."""
    app, client = billing
    handshake = await client.post("/webhooks/graph?validationToken=Token%20ABC")
    notification = {
        "subscriptionId": "s1",
        "changeType": "created",
        "clientState": GRAPH_STATE,
        "resource": "users/1/messages/{}",
    }
    batch = {"value": [{**notification, "resource": "m/1"}, {**notification, "resource": "m/2"}]}
    accepted = await client.post("/webhooks/graph", json=batch)
    forged = await client.post(
        "/webhooks/graph", json={"value": [{**notification, "clientState": "guess"}]}
    )
    events, runs = await _rows(app)
    assert handshake.status_code == 200
    assert handshake.text == "Token ABC"
    assert handshake.headers["content-type"].startswith("text/plain")
    assert accepted.status_code == 202
    assert len(accepted.json()["events"]) == 2
    assert forged.status_code == 401
    assert [e.event_type for e in events] == ["created", "created"]
    assert len(runs) == 2


async def test_scheme_none_is_refused_in_production(make_settings: Callable[..., Settings]) -> None:
    """An unverified source would let anyone start runs: production will not start."""
    import hashlib as h  # noqa: PLC0415

    key = {"name": "k", "sha256": h.sha256(b"k").hexdigest(), "scopes": ["admin"]}
    app = await _service(
        make_settings,
        env="production",
        api_keys=[key],
        sources={"open": {"scheme": "none", "default_task": "record_webhook"}},
    )
    with pytest.raises(ConfigurationError, match="scheme 'none'"):
        async with serve_app(app):
            pass


async def test_a_route_to_an_unknown_task_is_refused_at_start(
    make_settings: Callable[..., Settings],
) -> None:
    """A typo in a route would fail every event: the gateway does not start."""
    app = await _service(
        make_settings,
        sources={"billing": {**SOURCES["billing"], "routes": {"invoice.paid": "recrod_webhook"}}},
    )
    with pytest.raises(ConfigurationError, match="recrod_webhook"):
        async with serve_app(app):
            pass


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (
            {"default_task": "record_webhook", "routes": {"invoice.paid": "record_payment"}},
            "route task 'record_payment' is not registered (event type 'invoice.paid' "
            "routes there)",
        ),
        (
            {"routes": {"a": "record_payment", "b": {"task": "record_payment"}}},
            "route task 'record_payment' is not registered (event types 'a', 'b' route there)",
        ),
        (
            {"default_task": "record_webhok"},
            "route task 'record_webhok' is not registered (the source's default_task; "
            "did you mean 'record_webhook'?)",
        ),
        (
            {"routes": {"invoice.paid": "record_webhook"}},
            "route task 'process_webhook_event' is not registered (events without a route "
            "go there; set default_task for this source)",
        ),
    ],
    ids=["route", "routes", "default_task", "implicit_default"],
)
def test_a_refused_route_says_what_leads_to_the_task(
    make_settings: Callable[..., Settings], source: dict[str, Any], reason: str
) -> None:
    """Only the implicit default gets the hint to set ``default_task``; a route names the
    event types that go to the missing task."""
    from taskiq import InMemoryBroker  # noqa: PLC0415

    from jobs_service.gateway.app import check_webhook_routes  # noqa: PLC0415

    registry = InMemoryBroker()
    registry.register_task(lambda event_id: event_id, task_name="record_webhook")
    settings = make_settings(
        webhooks={"sources": {"billing": {"scheme": "github", "secrets": ["x"], **source}}}
    )
    with pytest.raises(ConfigurationError) as refused:
        check_webhook_routes(settings, registry)
    assert str(refused.value) == f"webhooks.sources.billing: {reason}; refusing to start"


async def test_counts_of_stored_events(billing: tuple[FastAPI, httpx.AsyncClient]) -> None:
    """Three distinct deliveries: three events, three runs, all processed."""
    app, client = billing
    for n in range(3):
        body = json.dumps({"type": "invoice.paid", "n": n}).encode()
        await client.post("/webhooks/billing", content=body, headers=standard(body, f"m{n}"))
    await asyncio.sleep(0)
    await _settled(app)
    async with app.state.runtime.database.sessions() as session:
        statuses = dict(
            (
                await session.execute(
                    select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)
                )
            ).all()
        )
    assert statuses == {"processed": 3}


async def test_the_inbox_lists_shows_and_replays(
    billing: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """List with filters and pages, detail with redacted headers, replay = a new run."""
    app, client = billing
    for n in range(3):
        body = json.dumps({"type": "invoice.paid" if n else "invoice.voided", "n": n}).encode()
        await client.post("/webhooks/billing", content=body, headers=standard(body, f"e{n}"))
    await _settled(app)
    async with asgi_client(app) as operator:  # operators call from loopback (no keys here)
        page = (await operator.get("/v1/webhooks/events?limit=2")).json()
        rest = (await operator.get(f"/v1/webhooks/events?cursor={page['next_cursor']}")).json()
        paid = (await operator.get("/v1/webhooks/events?type=invoice.paid")).json()["items"]
        detail = (await operator.get(f"/v1/webhooks/events/{paid[0]['id']}")).json()
        replay = await operator.post(f"/v1/webhooks/events/{paid[0]['id']}/replay")
        await _settled(app)
        after = (await operator.get(f"/v1/webhooks/events/{paid[0]['id']}")).json()
        missing = await operator.get("/v1/webhooks/events/999999")
        history = (await operator.get("/v1/runs?limit=50&source=webhook")).json()["items"]
    assert [e["external_id"] for e in page["items"] + rest["items"]] == ["e2", "e1", "e0"]
    assert rest["next_cursor"] is None
    assert {e["external_id"] for e in paid} == {"e1", "e2"}
    assert detail["body"] == {"type": "invoice.paid", "n": 2}
    assert detail["headers"]["webhook-signature"] == "[redacted]"
    assert detail["headers"]["webhook-id"] == "e2"
    assert replay.status_code == 202
    assert replay.json()["run_id"] != detail["run_id"]
    assert after["run_id"] == replay.json()["run_id"]
    assert after["status"] == "processed"
    assert missing.status_code == 404
    runs_of_event = [r for r in history if r["webhook_event_id"] == paid[0]["id"]]
    assert len(runs_of_event) == 2


async def test_metrics_count_outcomes_by_source(
    billing: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """/metrics counts accepted, duplicate and rejected requests per source."""
    from prometheus_client import REGISTRY  # noqa: PLC0415

    def count(outcome: str) -> float:
        value = REGISTRY.get_sample_value(
            "jobs_webhook_requests_total", {"source": "billing", "outcome": outcome}
        )
        return value or 0.0

    _, client = billing
    before = {o: count(o) for o in ("accepted", "duplicate", "rejected")}
    body = json.dumps({"type": "invoice.paid", "m": "metrics"}).encode()
    headers = standard(body, "metrics-1")
    await client.post("/webhooks/billing", content=body, headers=headers)
    await client.post("/webhooks/billing", content=body, headers=headers)
    await client.post("/webhooks/billing", content=body + b" ", headers=headers)
    exposed = (await client.get("/metrics")).text
    assert count("accepted") - before["accepted"] == 1
    assert count("duplicate") - before["duplicate"] == 1
    assert count("rejected") - before["rejected"] == 1
    assert 'jobs_webhook_requests_total{outcome="accepted",source="billing"}' in exposed


async def test_the_relay_task_enqueues_events_stored_while_the_broker_was_down(
    billing: tuple[FastAPI, httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Broker refused at ingest: 202 and stored; relay_webhook_events sends that run."""
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    from sqlalchemy import update  # noqa: PLC0415

    from jobs_service.client import EnqueueError  # noqa: PLC0415

    app, client = billing
    real_send = app.state.client.send

    async def refuse(*args: object, **kwargs: object) -> None:
        raise EnqueueError("broker down")

    monkeypatch.setattr(app.state.client, "send", refuse)
    body = json.dumps({"type": "invoice.paid", "relay": True}).encode()
    stored = await client.post("/webhooks/billing", content=body, headers=standard(body, "r-1"))
    monkeypatch.setattr(app.state.client, "send", real_send)
    async with app.state.runtime.database.engine.begin() as connection:  # time passes
        await connection.execute(
            update(WebhookEvent).values(updated_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    async with asgi_client(app) as operator:
        submitted = await operator.post("/v1/tasks/relay_webhook_events", json={})
        run_id = submitted.json()["run_id"]
        relay_run: dict[str, Any] = {}
        for _ in range(100):
            relay_run = (await operator.get(f"/v1/runs/{run_id}")).json()
            if relay_run["status"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.02)
    events, runs = await _rows(app)
    assert stored.json()["status"] == "accepted"
    assert relay_run["summary"] == {"relayed": 1, "errors": 0}
    assert events[0].status == "processed"
    assert [r.run_id for r in runs] == [events[0].run_id]


async def test_a_replay_delivers_its_result_where_the_first_run_did(
    make_settings: Callable[..., Settings],
) -> None:
    """A route with ``deliver_to``: the replayed run has the same destinations as the
    run the event got when it came in (it had none before this was fixed)."""
    target = {"email": ["ops@example.com"]}
    sources = {
        "billing": {
            **SOURCES["billing"],
            "routes": {"invoice.paid": {"task": "record_webhook", "deliver_to": target}},
        }
    }
    app = await _service(make_settings, sources=sources)
    async with serve_app(app) as client:
        body = json.dumps({"type": "invoice.paid"}).encode()
        accepted = await client.post("/webhooks/billing", content=body, headers=standard(body))
        event_id = accepted.json()["event_id"]
        await _settled(app)
        replay = await client.post(f"/v1/webhooks/events/{event_id}/replay")
        _, runs = await _rows(app)
    assert replay.status_code == 202
    by_id = {run.run_id: run for run in runs}
    first = next(run for run in runs if run.run_id != replay.json()["run_id"])
    assert first.deliver_to is not None
    assert first.deliver_to["email"]["to"] == ["ops@example.com"]
    assert by_id[replay.json()["run_id"]].deliver_to == first.deliver_to


async def test_a_replay_delivers_where_the_route_says_now(
    make_settings: Callable[..., Settings],
) -> None:
    """The operator corrects the route's address (or renames a channel) and replays: the
    replay goes to the route's current target, and a target the old run had but the
    configuration no longer knows does not make the replay fail."""
    body = json.dumps({"type": "invoice.paid"}).encode()

    def sources(address: str) -> dict[str, Any]:
        route = {"task": "record_webhook", "deliver_to": {"email": [address]}}
        return {"billing": {**SOURCES["billing"], "routes": {"invoice.paid": route}}}

    first = await _service(make_settings, sources=sources("wrong@example.com"))
    async with serve_app(first) as client:
        event_id = (
            await client.post("/webhooks/billing", content=body, headers=standard(body))
        ).json()["event_id"]
        await _settled(first)
    corrected = await _service(make_settings, sources=sources("ops@example.com"))
    async with serve_app(corrected) as client:
        replay = await client.post(f"/v1/webhooks/events/{event_id}/replay")
        _, runs = await _rows(corrected)
    assert replay.status_code == 202, replay.text
    replayed = next(run for run in runs if run.run_id == replay.json()["run_id"])
    assert replayed.deliver_to is not None
    assert replayed.deliver_to["email"]["to"] == ["ops@example.com"]


async def test_a_signature_header_named_anything_is_redacted(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    """An hmac-sha256 source signs with the header it names (X-Shopify-Hmac-Sha256,
    X-Acme-Auth): its value used to be stored with the event and written to the request
    log in clear, as neither name says "signature"."""
    sources = {
        name: {
            "scheme": "hmac-sha256",
            "secrets": ["acme-secret"],
            "signature_header": header,
            "signature_encoding": "hex",
            "default_task": "record_webhook",
        }
        for name, header in (("shop", "X-Shopify-Hmac-Sha256"), ("acme", "X-Acme-Auth"))
    }
    app = await _service(make_settings, sources=sources)
    signatures = []
    async with serve_app(app, client_host="203.0.113.9") as client:
        for source, header in (("shop", "X-Shopify-Hmac-Sha256"), ("acme", "X-Acme-Auth")):
            body = json.dumps({"id": f"{source}-1"}).encode()
            signature = hmac.new(b"acme-secret", body, hashlib.sha256).hexdigest()
            signatures.append(signature)
            response = await client.post(
                f"/webhooks/{source}",
                content=body,
                headers={header: signature, "content-type": "application/json"},
            )
            assert response.status_code == 202, response.text
        events, _ = await _rows(app)
    logged = capsys.readouterr()
    assert [event.headers["x-shopify-hmac-sha256"] for event in events[:1]] == ["[redacted]"]
    assert events[1].headers["x-acme-auth"] == "[redacted]"
    for signature in signatures:
        assert signature not in logged.out + logged.err


async def test_a_sender_gone_mid_body_is_logged_as_a_client_event(
    billing: tuple[FastAPI, httpx.AsyncClient], capsys: pytest.CaptureFixture[str]
) -> None:
    """A sender that disconnects before its body has arrived is nobody's error: it was
    logged as ``unhandled-error`` with a traceback and counted as a 500. Now the request
    log says 499, nothing is answered (nobody is listening), nothing is stored, and the
    source's metric counts it ``disconnected``."""
    from prometheus_client import REGISTRY  # noqa: PLC0415

    def disconnected() -> float:
        labels = {"source": "billing", "outcome": "disconnected"}
        return REGISTRY.get_sample_value("jobs_webhook_requests_total", labels) or 0.0

    app, _ = billing
    before = disconnected()
    arriving: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"type": "invoice.', "more_body": True},
        {"type": "http.disconnect"},
    ]
    answered: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return arriving.pop(0)

    async def send(message: dict[str, Any]) -> None:
        answered.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/billing",
        "raw_path": b"/webhooks/billing",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"transfer-encoding", b"chunked")],
        "client": ("203.0.113.9", 40000),
        "server": ("gateway", 80),
    }
    await app(scope, receive, send)
    events, _ = await _rows(app)
    logged = capsys.readouterr().err.splitlines()
    requests = [json.loads(line) for line in logged if '"http-request"' in line]
    assert answered == []
    assert [line["status"] for line in requests] == [499]
    assert not [line for line in logged if "unhandled-error" in line or "Traceback" in line]
    assert any('"client-disconnected"' in line for line in logged)
    assert events == []
    assert disconnected() - before == 1


async def _event_in(client: httpx.AsyncClient, event_id: int, status: str) -> dict[str, Any]:
    """The event as the inbox shows it, once it is in ``status``."""
    event: dict[str, Any] = {}
    for _ in range(300):
        event = (await client.get(f"/v1/webhooks/events/{event_id}")).json()
        if event["status"] == status:
            return event
        await asyncio.sleep(0.01)
    raise AssertionError(f"event {event_id} stayed {event.get('status')}")


async def _runs_of_event(app: FastAPI, event_id: int) -> dict[str, str]:
    """``run_id → status`` of every run of the event."""
    await _settled(app)
    async with app.state.runtime.database.sessions() as session:
        rows = await session.execute(
            select(JobRun.run_id, JobRun.status).where(JobRun.webhook_event_id == event_id)
        )
        return {str(run_id): str(status) for run_id, status in rows}


async def test_an_event_whose_run_is_running_is_not_replayed(
    make_settings: Callable[..., Settings],
) -> None:
    """A replay used to point the event at a new run while its run still ran; that run
    then overwrote the replay's state when it ended. It is a 409 naming the run to wait
    for, nothing changes, and once the run has ended the replay is accepted."""
    from tests.support.sample_tasks import WEBHOOK_GATES  # noqa: PLC0415

    sources = {"billing": {**SOURCES["billing"], "routes": {"invoice.paid": "hold_webhook"}}}
    app = await _service(make_settings, sources=sources)
    body = json.dumps({"type": "invoice.paid"}).encode()
    async with serve_app(app) as client:
        event_id = (
            await client.post("/webhooks/billing", content=body, headers=standard(body))
        ).json()["event_id"]
        running = await _event_in(client, event_id, "enqueued")
        refused = await client.post(f"/v1/webhooks/events/{event_id}/replay")
        unchanged = (await client.get(f"/v1/webhooks/events/{event_id}")).json()
        WEBHOOK_GATES.setdefault(event_id, asyncio.Event()).set()
        await _settled(app)
        ended = await _event_in(client, event_id, "processed")
        replayed = await client.post(f"/v1/webhooks/events/{event_id}/replay")
        runs = await _runs_of_event(app, event_id)
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == "urn:jobs-service:problem:webhook-event-in-progress"
    assert (problem["event_status"], problem["run_id"]) == ("enqueued", running["run_id"])
    assert running["run_id"] in problem["detail"]
    assert "processed or failed" in problem["detail"]
    assert (unchanged["status"], unchanged["run_id"]) == ("enqueued", running["run_id"])
    assert ended["run_id"] == running["run_id"]
    assert replayed.status_code == 202
    assert set(runs) == {running["run_id"], replayed.json()["run_id"]}


async def test_an_event_waiting_for_the_relay_is_not_replayed(
    billing: tuple[FastAPI, httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An event stored while the broker was down still waits for its run to be relayed;
    a replay then left that first run queued for good (the relay followed the event to
    the new run). It is a 409 saying the relay will send it, and the relay does."""
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    from sqlalchemy import update  # noqa: PLC0415

    from jobs_service.client import EnqueueError  # noqa: PLC0415

    app, client = billing
    real_send = app.state.client.send

    async def refuse(*args: object, **kwargs: object) -> None:
        raise EnqueueError("broker down")

    monkeypatch.setattr(app.state.client, "send", refuse)
    body = json.dumps({"type": "invoice.paid"}).encode()
    event_id = (
        await client.post("/webhooks/billing", content=body, headers=standard(body))
    ).json()["event_id"]
    async with asgi_client(app) as operator:
        refused = await operator.post(f"/v1/webhooks/events/{event_id}/replay")
    monkeypatch.setattr(app.state.client, "send", real_send)
    async with app.state.runtime.database.engine.begin() as connection:  # time passes
        await connection.execute(
            update(WebhookEvent).values(updated_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    relayed = await app.state.webhook_inbox.relay()
    events, _ = await _rows(app)
    runs = await _runs_of_event(app, event_id)
    assert refused.status_code == 409
    assert refused.json()["event_status"] == "accepted"
    assert "relay" in refused.json()["detail"]
    assert relayed == 1
    assert (events[0].status, list(runs.items())) == (
        "processed",
        [(events[0].run_id, "succeeded")],
    )


async def test_events_differing_only_in_a_big_number_are_both_accepted(
    make_settings: Callable[..., Settings],
) -> None:
    """A sender without event ids: two transfers whose amounts differ beyond 64 bits of
    precision were one event (the second answered duplicate and dropped). Both are
    accepted and run, and the inbox shows each amount to the last digit."""
    sources = {
        "acme": {
            "scheme": "hmac-sha256",
            "secrets": ["acme-secret"],
            "signature_header": "X-Acme-Signature",
            "default_task": "record_webhook",
        }
    }
    app = await _service(make_settings, sources=sources)
    amounts = [10**20 + 1, 10**20 + 2]
    answers = []
    async with serve_app(app, client_host="203.0.113.9") as client:
        for amount in amounts:
            body = b'{"type":"transfer","amount_wei":%d}' % amount
            signature = hmac.new(b"acme-secret", body, hashlib.sha256).hexdigest()
            answers.append(
                await client.post(
                    "/webhooks/acme", content=body, headers={"X-Acme-Signature": signature}
                )
            )
        _, runs = await _rows(app)
        async with asgi_client(app) as operator:
            shown = [
                (await operator.get(f"/v1/webhooks/events/{a.json()['event_id']}")).json()
                for a in answers
            ]
    assert [a.json()["status"] for a in answers] == ["accepted", "accepted"]
    assert len(runs) == 2
    assert [event["body"]["amount_wei"] for event in shown] == amounts


async def test_event_ids_alike_as_doubles_are_two_events(
    make_settings: Callable[..., Settings],
) -> None:
    """Ids with a fraction that differ past a double's 17 digits were one id: the second
    event was answered ``duplicate`` and never run. Each is accepted and run under its
    id as sent, and a retry of the first is still its duplicate."""
    sources = {
        "acme": {
            "scheme": "hmac-sha256",
            "secrets": ["acme-secret"],
            "signature_header": "X-Acme-Signature",
            "default_task": "record_webhook",
        }
    }
    app = await _service(make_settings, sources=sources)
    ids = ["1234567890123456789.5", "1234567890123456789.7", "1234567890123456789.5"]
    answers = []
    async with serve_app(app, client_host="203.0.113.9") as client:
        for event_id in ids:
            body = b'{"id":%s,"type":"transfer"}' % event_id.encode()
            signature = hmac.new(b"acme-secret", body, hashlib.sha256).hexdigest()
            answers.append(
                await client.post(
                    "/webhooks/acme", content=body, headers={"X-Acme-Signature": signature}
                )
            )
        events, runs = await _rows(app)
    assert [a.json()["status"] for a in answers] == ["accepted", "accepted", "duplicate"]
    assert answers[2].json()["event_id"] == answers[0].json()["event_id"]
    assert [event.external_id for event in events] == ids[:2]
    assert len(runs) == 2


async def test_a_nul_in_an_event_type_is_a_malformed_webhook(
    billing: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """A NUL character in the type (or id) cannot be stored on PostgreSQL: 400
    malformed-webhook naming it, and nothing stored, on every database alike."""
    app, client = billing
    body = b'{"type": "invoice.\\u0000paid"}'
    response = await client.post("/webhooks/billing", content=body, headers=standard(body))
    events, _ = await _rows(app)
    assert response.status_code == 400
    assert response.json()["type"] == "urn:jobs-service:problem:malformed-webhook"
    assert "NUL" in response.json()["detail"]
    assert events == []


async def test_a_nul_in_the_event_type_filter_is_a_422(
    billing: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """``GET /v1/webhooks/events?type=%00`` is the caller's mistake: a 422 naming the
    NUL, as for kwargs, on every database (PostgreSQL would otherwise fail the query)."""
    app, _ = billing
    async with asgi_client(app) as operator:
        response = await operator.get("/v1/webhooks/events", params={"type": "invoice.\x00paid"})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == "urn:jobs-service:problem:invalid-request"
    assert problem["errors"][0]["loc"] == ["query", "type"]
    assert problem["errors"][0]["type"] == "unportable_value"
    assert problem["errors"][0]["msg"] == "text must not contain NUL characters"


async def test_the_relay_fails_events_whose_run_can_never_be_sent(
    billing: tuple[FastAPI, httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stored while the broker was down, then a deploy removed their task (or their run
    was deleted): the relay skipped such events and left them accepted, so they came
    back every time, and 500 of them filled its page for good. They are failed with the
    reason, their runs too, and the relay goes on with the others. A task unknown here
    but accepted within the last hour may belong to a newer release (a rolling
    deploy): that event is left for a process that knows it."""
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    from sqlalchemy import delete, update  # noqa: PLC0415

    from jobs_service.client import EnqueueError  # noqa: PLC0415

    app, client = billing
    real_send = app.state.client.send

    async def refuse(*args: object, **kwargs: object) -> None:
        raise EnqueueError("broker down")

    monkeypatch.setattr(app.state.client, "send", refuse)
    ids = []
    for n in range(4):
        body = json.dumps({"type": "invoice.paid", "n": n}).encode()
        answer = await client.post(
            "/webhooks/billing", content=body, headers=standard(body, f"relay-{n}")
        )
        ids.append(answer.json()["event_id"])
    gone_task, gone_run, sendable, newer_task = ids
    monkeypatch.setattr(app.state.client, "send", real_send)
    async with app.state.runtime.database.engine.begin() as connection:
        await connection.execute(
            update(JobRun)
            .where(JobRun.webhook_event_id.in_([gone_task, newer_task]))
            .values(task="renamed_away")
        )
        await connection.execute(delete(JobRun).where(JobRun.webhook_event_id == gone_run))
        await connection.execute(  # time passes
            update(WebhookEvent).values(updated_at=datetime.now(UTC) - timedelta(minutes=1))
        )
        await connection.execute(  # past the hour an unknown task is given
            update(WebhookEvent)
            .where(WebhookEvent.id == gone_task)
            .values(updated_at=datetime.now(UTC) - timedelta(hours=2))
        )
    relayed = await app.state.webhook_inbox.relay()
    again = await app.state.webhook_inbox.relay()
    events, runs = await _rows(app)
    by_id = {event.id: event for event in events}
    run_of_gone_task = next(run for run in runs if run.webhook_event_id == gone_task)
    assert (relayed, again) == (1, 0)
    assert by_id[gone_task].status == "failed"
    assert by_id[gone_task].error == {
        "type": "UnknownTaskError",
        "message": "no task named 'renamed_away' is registered",
    }
    assert (run_of_gone_task.status, run_of_gone_task.error) == ("failed", by_id[gone_task].error)
    assert by_id[gone_run].status == "failed"
    assert by_id[gone_run].error is not None
    assert by_id[gone_run].error["type"] == "RunNotFoundError"
    assert by_id[sendable].status == "processed"
    assert by_id[newer_task].status == "accepted"
