"""A fake Microsoft Graph: sendMail, calendar events and Teams channel messages.

It answers like Graph as far as the Graph agent uses it: bearer tokens checked against
the fake token endpoint, request bodies validated to the shape Graph accepts, Graph's
``{"error": {"code", "message"}}`` on failures, ``transactionId`` idempotency on events,
and injected throttling (429/503 with ``Retry-After``) for the SDK's retry handler.
Serve it with :func:`tests.support.fakes.server.serve`; the base URL then ends in
``/v1.0``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["FakeGraph", "GraphRequest"]

_THROTTLE_CODES = {429: "TooManyRequests", 503: "ServiceNotAvailable", 504: "GatewayTimeout"}


@dataclass(frozen=True)
class GraphRequest:
    """One request Graph received, as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any

    @property
    def token(self) -> str | None:
        """The bearer token it carried."""
        value = self.headers.get("authorization", "")
        return value.removeprefix("Bearer ") if value.startswith("Bearer ") else None


class _InvalidBodyError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _delegated(token: str) -> bool:
    return token.startswith("user-")  # what FakeTokenEndpoint issues for refresh_token


@dataclass
class FakeGraph:
    """Graph for one tenant. ``valid_token`` says which ``Authorization`` values Graph
    accepts (e.g. ``FakeTokenEndpoint.valid``; ``None`` accepts any bearer token);
    ``delegated_token`` which tokens are a user's rather than the app's."""

    valid_token: Callable[[str | None], bool] | None = None
    base_url: str = ""  # where the test serves it, ending in /v1.0
    delegated_token: Callable[[str], bool] = _delegated
    requests: list[GraphRequest] = field(default_factory=list)
    sent_mail: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    channel_messages: list[dict[str, Any]] = field(default_factory=list)
    _by_transaction: dict[str, str] = field(default_factory=dict)
    _failures: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(
        self, path: str, status: int = 429, count: int = 1, retry_after: str | None = None
    ) -> None:
        """Answer the next ``count`` authorised requests whose path ends with ``path``
        (e.g. ``"/sendMail"``) with ``status`` and, if given, ``Retry-After``."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._lock:
            self._failures.extend([(path, status, headers)] * count)

    def requests_to(self, path: str) -> list[GraphRequest]:
        """The requests whose path ends with ``path``, in arrival order."""
        with self._lock:
            return [request for request in self.requests if request.path.endswith(path)]

    @property
    def app(self) -> Starlette:
        """The ASGI app, routes under ``/v1.0``."""
        return Starlette(
            routes=[
                Route("/v1.0/users/{user}/sendMail", self._send_mail, methods=["POST"]),
                Route("/v1.0/users/{user}/events", self._create_event, methods=["POST"]),
                Route(
                    "/v1.0/teams/{team}/channels/{channel}/messages",
                    self._post_message,
                    methods=["POST"],
                ),
            ]
        )

    async def _receive(self, request: Request) -> tuple[Any, Response | None]:
        """Record the request; the body, or the answer Graph gives before reading it."""
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode(errors="replace")
        record = GraphRequest(request.method, request.url.path, dict(request.headers), body)
        authorization = request.headers.get("authorization")
        with self._lock:
            self.requests.append(record)
        accepted = record.token is not None and (
            self.valid_token is None or self.valid_token(authorization)
        )
        if not accepted:
            message = "Access token is empty." if record.token is None else "Invalid token."
            return body, _error(401, "InvalidAuthenticationToken", message)
        with self._lock:
            failure = next((f for f in self._failures if record.path.endswith(f[0])), None)
            if failure is not None:
                self._failures.remove(failure)
        if failure is not None:
            _, status, headers = failure
            code = _THROTTLE_CODES.get(status, "InjectedFailure")
            return body, _error(status, code, f"injected {status}", headers)
        if not isinstance(body, dict):
            return body, _error(400, "BadRequest", "Empty Payload. JSON content expected.")
        return body, None

    async def _send_mail(self, request: Request) -> Response:
        body, answer = await self._receive(request)
        if answer is not None:
            return answer
        # Graph reads action parameters case-insensitively; the SDK sends "Message".
        params = {key.lower(): value for key, value in body.items()}
        try:
            message = _object(params.get("message"), "message")
            _check_message(message)
            if not isinstance(params.get("savetosentitems", False), bool):
                raise _InvalidBodyError("RequestBodyRead", "saveToSentItems must be a boolean")
        except _InvalidBodyError as exc:
            return _error(400, exc.code, str(exc))
        with self._lock:
            self.sent_mail.append({"user": request.path_params["user"], **params})
        return Response(status_code=202)

    async def _create_event(self, request: Request) -> Response:
        body, answer = await self._receive(request)
        if answer is not None:
            return answer
        try:
            _check_event(body)
        except _InvalidBodyError as exc:
            return _error(400, exc.code, str(exc))
        transaction = body.get("transactionId")
        with self._lock:
            existing = self._by_transaction.get(transaction) if transaction else None
            if existing is not None:  # Graph's idempotency: the event it already made
                return JSONResponse(self.events[existing], status_code=201)
            event_id = f"AAMkEvent{next(self._ids)}="
            event = {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('x')/events/$entity",
                "id": event_id,
                **body,
                "organizer": {"emailAddress": {"address": request.path_params["user"]}},
                "attendees": [
                    {**attendee, "status": {"response": "none", "time": "0001-01-01T00:00:00Z"}}
                    for attendee in body.get("attendees", [])
                ],
            }
            self.events[event_id] = event
            if transaction:
                self._by_transaction[transaction] = event_id
        return JSONResponse(event, status_code=201)

    async def _post_message(self, request: Request) -> Response:
        body, answer = await self._receive(request)
        if answer is not None:
            return answer
        token = request.headers["authorization"].removeprefix("Bearer ")
        if not self.delegated_token(token):
            return _error(
                403,
                "Forbidden",
                "Message POST is allowed in application-only context only for import purposes.",
            )
        try:
            _check_body(body.get("body"), "body")
        except _InvalidBodyError as exc:
            return _error(400, exc.code, str(exc))
        with self._lock:
            message = {
                "id": str(1_700_000_000_000 + next(self._ids)),
                "messageType": "message",
                "body": body["body"],
                "channelIdentity": {
                    "teamId": request.path_params["team"],
                    "channelId": request.path_params["channel"],
                },
            }
            self.channel_messages.append(message)
        return JSONResponse(message, status_code=201)


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "innerError": {"request-id": "fake"}}},
        status_code=status,
        headers=headers,
    )


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _InvalidBodyError("RequestBodyRead", f"{name} must be an object")
    return value


def _check_body(value: Any, name: str) -> None:
    body = _object(value, name)
    if str(body.get("contentType", "text")).lower() not in {"text", "html"}:
        raise _InvalidBodyError("RequestBodyRead", f"{name}.contentType must be text or html")
    if not isinstance(body.get("content"), str):
        raise _InvalidBodyError("RequestBodyRead", f"{name}.content must be a string")


def _check_address(value: Any, name: str) -> None:
    address = _object(_object(value, name).get("emailAddress"), f"{name}.emailAddress")
    text = address.get("address")
    if not isinstance(text, str) or "@" not in text:
        raise _InvalidBodyError(
            "ErrorInvalidRecipients", f"At least one recipient isn't valid: {text}"
        )


def _check_message(message: dict[str, Any]) -> None:
    if not isinstance(message.get("subject", ""), str):
        raise _InvalidBodyError("RequestBodyRead", "message.subject must be a string")
    _check_body(message.get("body"), "message.body")
    to = message.get("toRecipients")
    if not isinstance(to, list) or not to:
        raise _InvalidBodyError("ErrorInvalidRecipients", "At least one recipient is required.")
    for index, recipient in enumerate([*to, *message.get("ccRecipients", [])]):
        _check_address(recipient, f"recipient[{index}]")
    for index, attachment in enumerate(message.get("attachments", [])):
        _check_attachment(_object(attachment, f"attachments[{index}]"))
    for header in message.get("internetMessageHeaders", []):
        name = _object(header, "internetMessageHeaders[]").get("name", "")
        if not str(name).lower().startswith("x-"):
            raise _InvalidBodyError(
                "InvalidInternetMessageHeader", "custom headers must start with 'x-' or 'X-'"
            )


def _check_attachment(attachment: dict[str, Any]) -> None:
    if attachment.get("@odata.type") != "#microsoft.graph.fileAttachment":
        raise _InvalidBodyError(
            "ErrorInvalidAttachment", "attachments need @odata.type #microsoft.graph.fileAttachment"
        )
    if not attachment.get("name"):
        raise _InvalidBodyError("ErrorInvalidAttachment", "an attachment needs a name")
    try:
        base64.b64decode(str(attachment.get("contentBytes")), validate=True)
    except (binascii.Error, ValueError):
        raise _InvalidBodyError("RequestBodyRead", "contentBytes must be base64") from None


def _check_event(event: dict[str, Any]) -> None:
    if not isinstance(event.get("subject", ""), str):
        raise _InvalidBodyError("RequestBodyRead", "subject must be a string")
    _check_body(event.get("body", {"content": ""}), "body")
    for name in ("start", "end"):
        moment = _object(event.get(name), name)
        if not isinstance(moment.get("dateTime"), str) or not moment.get("timeZone"):
            raise _InvalidBodyError("ErrorInvalidRequest", f"{name} needs dateTime and timeZone")
    for index, attendee in enumerate(event.get("attendees", [])):
        _check_address(attendee, f"attendees[{index}]")
        if str(attendee.get("type", "required")).lower() not in {
            "required",
            "optional",
            "resource",
        }:
            raise _InvalidBodyError(
                "RequestBodyRead", "attendee type must be required/optional/resource"
            )
