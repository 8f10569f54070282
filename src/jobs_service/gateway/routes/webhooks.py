"""``POST /webhooks/{source}``: verify, persist, enqueue, answer 202 (DESIGN §6)."""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from jobs_service.core.logging import HotPathLogger, get_logger
from jobs_service.core.redaction import redact_headers
from jobs_service.gateway.problems import Problem, problem_responses
from jobs_service.webhooks.events import MalformedEventError, split_events
from jobs_service.webhooks.metrics import count_webhook
from jobs_service.webhooks.verification import VerificationError

router = APIRouter(tags=["webhooks"])
_log = get_logger("jobs_service.webhooks")
#: One line per event accepted: the structlog chain would cost as much as storing it.
_hot_log = HotPathLogger("jobs_service.webhooks")


class EventAnswer(BaseModel):
    """What became of one event of a delivery."""

    event_id: int
    status: Literal["accepted", "duplicate"]


class WebhookAnswer(EventAnswer):
    """The first event's answer; ``events`` lists every one when the body held several."""

    events: list[EventAnswer] | None = None


_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": WebhookAnswer, "description": "Stored, and enqueued or a duplicate"},
    200: {
        "description": "Microsoft Graph validation handshake: the validationToken echoed",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    **problem_responses(
        {
            400: "Malformed body",
            401: "Bad signature or stale timestamp",
            404: "Unknown source",
            413: "Body too large",
            # FastAPI documents one for the path parameter; any string is a valid one.
            422: "Invalid request",
            503: "Database unavailable: retry",
        }
    ),
}
#: Read from the raw bytes (the signature covers them), so FastAPI cannot infer it.
_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"description": "The sender's event (JSON)"}},
    },
}


async def _read_capped(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it exceeds ``limit`` — never buffering more."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise Problem(413, "body-too-large", f"the body exceeds {limit} bytes", limit=limit)
    # Straight from ``receive`` (not ``request.stream()``): usually one message.
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await request.receive()
        if message["type"] != "http.request":  # the client went away mid-body
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Problem(413, "body-too-large", f"the body exceeds {limit} bytes", limit=limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@router.post(
    "/webhooks/{source}",
    status_code=202,
    summary="Receive a webhook",
    responses=_RESPONSES,
    openapi_extra={"requestBody": _BODY},
)
async def receive_webhook(source: str, request: Request) -> Response:
    """Verified on the raw body, stored, then enqueued: 202 ``{"event_id", "status"}``
    with status ``accepted`` or ``duplicate``. Authentication is the signature, not an
    API key."""
    config = request.app.state.settings.webhooks.sources.get(source)
    if config is None:
        count_webhook("(unknown)", "unknown_source")
        raise Problem(404, "unknown-webhook-source", f"no webhook source {source!r}")
    if config.scheme == "graph":
        token = request.query_params.get("validationToken")
        if token is not None:
            return PlainTextResponse(token, status_code=200)
    try:
        body = await _read_capped(request, config.max_body_bytes)
    except Problem:
        count_webhook(source, "too_large")
        raise
    except ClientDisconnect:
        count_webhook(source, "disconnected")
        raise
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in request.scope["headers"]
    }
    try:
        verified = request.app.state.webhook_schemes[source].verify(body, headers, now=time.time())
    except VerificationError as exc:
        _log.warning("webhook-rejected", source=source, reason=exc.reason)
        count_webhook(source, "rejected")
        raise Problem(401, "webhook-rejected", exc.message, reason=exc.reason) from None
    try:
        events = split_events(config, body, headers, verified)
    except MalformedEventError as exc:
        _log.warning("webhook-rejected", source=source, reason="malformed")
        count_webhook(source, "malformed")
        raise Problem(400, "malformed-webhook", str(exc)) from None
    answers = await request.app.state.webhook_inbox.accept(
        source, config, events, redact_headers(headers)
    )
    for answer in answers:
        count_webhook(source, answer.status)
        _hot_log.info(
            "webhook-duplicate" if answer.status == "duplicate" else "webhook-accepted",
            source=source,
            event_id=answer.event_id,
            external_id=answer.external_id,
        )
    body_out: dict[str, Any] = {"event_id": answers[0].event_id, "status": answers[0].status}
    if len(answers) > 1:
        body_out["events"] = [{"event_id": a.event_id, "status": a.status} for a in answers]
    return Response(orjson.dumps(body_out), status_code=202, media_type="application/json")
