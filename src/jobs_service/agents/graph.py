"""Microsoft Graph: mail, calendar events and Teams channel messages.

msgraph-sdk costs about half a second and ~500 modules to import, and only a worker
that delivers needs it, so it is imported on first use — in a thread, so the worker's event
loop keeps running other tasks meanwhile — and never by importing this module.

Tokens come from our own :class:`OAuth2Token`, not azure-identity: the token URL is then a
setting like any other, and tests serve it, and Graph, on loopback over plain HTTP.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

import httpx
import orjson

from jobs_service.core.errors import ConfigurationError, JobsError, PermanentError, RetryLater
from jobs_service.core.logging import get_logger
from jobs_service.core.settings import is_loopback_host
from jobs_service.infrastructure.http import OAuth2Token, retry_after_s, unreachable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from datetime import datetime

    from kiota_abstractions.api_error import APIError
    from kiota_abstractions.request_information import RequestInformation
    from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
    from msgraph.generated.models.email_address import EmailAddress
    from msgraph.generated.models.item_body import ItemBody
    from msgraph.generated.models.recipient import Recipient
    from msgraph.graph_service_client import GraphServiceClient
    from pydantic import SecretStr

    from jobs_service.core.settings import GraphSettings

__all__ = ["GraphAgent", "MailAttachment"]

_PROVIDER = "Microsoft Graph"
_DELIVERY_KEY_HEADER = "X-Jobs-Delivery-Key"
_MAX_DETAIL = 300
# Everything the agent touches in the SDK, imported together off the event loop; the
# imports inside the methods below then only look these up in sys.modules.
_SDK_MODULES = (
    "kiota_abstractions.api_error",
    "kiota_abstractions.authentication",
    "msgraph",
    "msgraph_core",
    "msgraph.generated.models.attendee",
    "msgraph.generated.models.attendee_type",
    "msgraph.generated.models.body_type",
    "msgraph.generated.models.chat_message",
    "msgraph.generated.models.date_time_time_zone",
    "msgraph.generated.models.email_address",
    "msgraph.generated.models.event",
    "msgraph.generated.models.file_attachment",
    "msgraph.generated.models.internet_message_header",
    "msgraph.generated.models.item_body",
    "msgraph.generated.models.message",
    "msgraph.generated.models.o_data_errors.o_data_error",
    "msgraph.generated.models.recipient",
    "msgraph.generated.teams.item.channels.item.messages.messages_request_builder",
    "msgraph.generated.teams.item.channels.item.channel_item_request_builder",
    "msgraph.generated.teams.item.channels.channels_request_builder",
    "msgraph.generated.teams.item.team_item_request_builder",
    "msgraph.generated.teams.teams_request_builder",
    "msgraph.generated.users.item.events.events_request_builder",
    "msgraph.generated.users.item.send_mail.send_mail_post_request_body",
    "msgraph.generated.users.item.send_mail.send_mail_request_builder",
    "msgraph.generated.users.item.user_item_request_builder",
    "msgraph.generated.users.users_request_builder",
)

_T = TypeVar("_T")
_log = get_logger("jobs_service.graph")


@dataclass(frozen=True, slots=True)
class MailAttachment:
    """A file sent inside the mail itself (Graph accepts up to ~3 MB this way)."""

    name: str
    content_type: str
    content: bytes


class _Credential:
    """One OAuth2 credential as the SDK's bearer provider uses it.

    It remembers the token it handed out last, so that a 401 drops that token. With
    concurrent calls that may be a newer token than the refused one; the cost is one
    extra token request, and ``OAuth2Token.invalidate`` ignores tokens no longer cached.
    """

    def __init__(self, oauth: OAuth2Token) -> None:
        self._oauth = oauth
        self._last: str | None = None

    async def token(self) -> str:
        self._last = await self._oauth.token()
        return self._last

    def drop(self) -> None:
        if self._last is not None:
            self._oauth.invalidate(self._last)


@dataclass(frozen=True, slots=True)
class _Client:
    sdk: GraphServiceClient
    credential: _Credential


class GraphAgent:
    """Sends mail, creates calendar events and posts Teams channel messages via Graph.

    Construction builds nothing and checks nothing: the gateway and the scheduler hold an
    agent they never use, and an incomplete ``[graph]`` must only fail the deliveries
    that need it, with the setting to fix.
    """

    def __init__(self, settings: GraphSettings) -> None:
        self._settings = settings
        self._token_http: httpx.AsyncClient | None = None
        self._graph_http: httpx.AsyncClient | None = None
        self._graph_transport: httpx.AsyncHTTPTransport | None = None
        self._clients: dict[bool, _Client] = {}

    async def send_mail(
        self,
        *,
        to: Sequence[str],
        subject: str,
        html: str,
        cc: Sequence[str] = (),
        attachments: Sequence[MailAttachment] = (),
        idempotency_key: str | None = None,
    ) -> None:
        """Send from ``[graph] sender``; a copy is kept in its Sent Items.

        Graph's sendMail has no idempotency of its own: ``idempotency_key`` travels as a
        header of the message so a duplicate can at least be recognised by a recipient.
        """
        sender = self._sender("is the mailbox that sends mail")
        client = await self._client(delegated=False)
        from msgraph.generated.models.file_attachment import FileAttachment  # noqa: PLC0415
        from msgraph.generated.models.internet_message_header import (  # noqa: PLC0415
            InternetMessageHeader,
        )
        from msgraph.generated.models.message import Message  # noqa: PLC0415
        from msgraph.generated.users.item.send_mail.send_mail_post_request_body import (  # noqa: PLC0415
            SendMailPostRequestBody,
        )

        message = Message(
            subject=subject,
            body=_html(html),
            to_recipients=[_recipient(address) for address in to],
            cc_recipients=[_recipient(address) for address in cc],
            attachments=[
                FileAttachment(
                    name=attachment.name,
                    content_type=attachment.content_type,
                    content_bytes=attachment.content,
                )
                for attachment in attachments
            ],
        )
        if idempotency_key is not None:
            message.internet_message_headers = [
                InternetMessageHeader(name=_DELIVERY_KEY_HEADER, value=idempotency_key)
            ]
        body = SendMailPostRequestBody(message=message, save_to_sent_items=True)
        send_mail = client.sdk.users.by_user_id(sender).send_mail
        await self._call(client, lambda: send_mail.post(body))

    async def create_event(
        self,
        *,
        subject: str,
        html: str,
        start: datetime,
        end: datetime,
        attendees: Sequence[str] = (),
        idempotency_key: str | None = None,
    ) -> str:
        """Create the event in the sender's calendar, inviting ``attendees``; its id.

        ``idempotency_key`` becomes Graph's ``transactionId``: Graph answers a repeat with
        the event it already created instead of a second one.
        """
        sender = self._sender("is the mailbox whose calendar holds the events")
        client = await self._client(delegated=False)
        from msgraph.generated.models.attendee import Attendee  # noqa: PLC0415
        from msgraph.generated.models.attendee_type import AttendeeType  # noqa: PLC0415
        from msgraph.generated.models.event import Event  # noqa: PLC0415

        event = Event(
            subject=subject,
            body=_html(html),
            start=_utc(start),
            end=_utc(end),
            attendees=[
                Attendee(email_address=_address(address), type=AttendeeType.Required)
                for address in attendees
            ],
            transaction_id=idempotency_key,
        )
        events = client.sdk.users.by_user_id(sender).events
        return await self._create(
            client, lambda: events.to_post_request_information(event), "the event"
        )

    async def post_channel_message(self, *, team_id: str, channel_id: str, html: str) -> str:
        """Post in a Teams channel as the user of ``[graph] delegated_refresh_token``; the
        message id. Graph lets app-only tokens post channel messages only when importing
        history, hence the delegated credential."""
        client = await self._client(delegated=True)
        from msgraph.generated.models.chat_message import ChatMessage  # noqa: PLC0415

        messages = client.sdk.teams.by_team_id(team_id).channels.by_channel_id(channel_id).messages
        message = ChatMessage(body=_html(html))
        return await self._create(
            client, lambda: messages.to_post_request_information(message), "the channel message"
        )

    async def aclose(self) -> None:
        """Close the connection pools; a later call builds the clients again."""
        self._clients.clear()
        for closable in (self._graph_http, self._graph_transport, self._token_http):
            if closable is not None:
                await closable.aclose()
        self._graph_http = self._graph_transport = self._token_http = None

    def _sender(self, why: str) -> str:
        return _required(self._settings.sender, "sender", why)

    async def _client(self, *, delegated: bool) -> _Client:
        client = self._clients.get(delegated)
        if client is not None:
            return client
        oauth = self._oauth(delegated=delegated)  # configuration errors before any import
        base_url = _no_clear_text(self._settings.base_url.rstrip("/"), "base_url")
        started = time.perf_counter()
        try:
            await asyncio.to_thread(_import_sdk)
        except ImportError as exc:  # a broken or partial install, not a bug to trace
            msg = (
                f"Microsoft Graph deliveries need msgraph-sdk, which cannot be imported "
                f"({exc}); install jobs-service with its dependencies"
            )
            raise ConfigurationError(msg) from None
        client = self._clients.get(delegated)  # another caller may have built it meanwhile
        if client is None:
            credential = _Credential(oauth)
            sdk = _build_sdk(self._sdk_http(), base_url, credential)
            client = self._clients[delegated] = _Client(sdk, credential)
            _log.info(
                "graph-client-built",
                delegated=delegated,
                duration_ms=round((time.perf_counter() - started) * 1000),
            )
        return client

    def _oauth(self, *, delegated: bool) -> OAuth2Token:
        settings = self._settings
        client_id = _required(settings.client_id, "client_id", "is the app registration's id")
        secret = _required(
            _secret(settings.client_secret), "client_secret", "is the app registration's secret"
        )
        token_url = _required(
            settings.effective_token_url,
            "token_url",
            "comes from tenant_id: set tenant_id (or token_url, for another token endpoint)",
        )
        _no_clear_text(token_url, "token_url")
        refresh_token = None
        if delegated:
            refresh_token = _required(
                _secret(settings.delegated_refresh_token),
                "delegated_refresh_token",
                "is a user's refresh token; Teams channel posts through Graph need one",
            )
        if self._token_http is None:
            self._token_http = httpx.AsyncClient(timeout=settings.timeout_s)
        return OAuth2Token(
            self._token_http,
            token_url=token_url,
            client_id=client_id,
            client_secret=secret,
            scope=settings.delegated_scope if delegated else settings.scope,
            setting="graph",
            refresh_token=refresh_token,
        )

    def _sdk_http(self) -> httpx.AsyncClient:
        if self._graph_http is None:
            from kiota_http.middleware.options import RetryHandlerOption  # noqa: PLC0415
            from msgraph_core import GraphClientFactory  # type: ignore[import-untyped]  # noqa: PLC0415 - msgraph_core has no py.typed

            # Kept apart because the SDK wraps it in a transport whose aclose() does not
            # close what it wraps: closing the client alone would leak the pool.
            self._graph_transport = httpx.AsyncHTTPTransport()
            http = httpx.AsyncClient(
                timeout=self._settings.timeout_s, transport=self._graph_transport
            )
            # Redirects and telemetry headers, but no retries of the SDK's own: it would
            # re-send a sendMail or a channel post answered 503/504 (which Graph may
            # have carried out: a duplicate no delivery record sees), and sleep out a
            # long Retry-After inside the task's slot. A 429, 503 or 504 is the run's
            # RetryLater instead, with Retry-After as its floor, and the retry sends
            # only what the delivery records say was not sent.
            no_retries = RetryHandlerOption(max_retries=0, should_retry=False)
            self._graph_http = GraphClientFactory.create_with_default_middleware(
                client=http, options={no_retries.get_key(): no_retries}
            )
        return self._graph_http

    async def _create(
        self, client: _Client, request: Callable[[], RequestInformation], what: str
    ) -> str:
        """POST what ``request()`` describes; the id of what Graph created.

        The answer is read as bytes, not as the SDK's model: the SDK parses any entity
        through its ``Entity`` base, whose deserializers import all ~1,200 entity classes
        (about 2 s of CPU and 20 MB) the first time, to return one id.
        """
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError  # noqa: PLC0415

        def send() -> Awaitable[bytes | None]:
            sent = client.sdk.request_adapter.send_primitive_async(
                request(), "bytes", {"XXX": ODataError}
            )
            # The SDK types that answer by a type variable of the return type alone.
            return cast("Awaitable[bytes | None]", sent)

        answer = await self._call(client, send)
        try:
            created = orjson.loads(answer or b"")
        except orjson.JSONDecodeError:
            created = None
        entity_id = created.get("id") if isinstance(created, dict) else None
        if not isinstance(entity_id, str) or not entity_id:
            msg = f"{_PROVIDER} created {what} but answered without its id"
            raise PermanentError(msg)
        return entity_id

    async def _call(self, client: _Client, send: Callable[[], Awaitable[_T]]) -> _T:
        """Send one SDK request and map what went wrong.

        ``send`` builds the request anew each time: the SDK keeps the Authorization
        header on a request it has sent. A 401 drops the token and sends once more with
        a new one (Graph acted on nothing it refused); a new token refused as well is a
        configuration error (the app registration, its tenant or its permissions), not
        a RetryLater that would be retried until the run is dead.
        """
        from kiota_abstractions.api_error import APIError  # noqa: PLC0415

        renewed = False
        while True:
            try:
                return await send()
            except httpx.HTTPError as exc:  # connect error, timeout, reset
                raise unreachable(exc, provider=_PROVIDER) from None
            except APIError as exc:
                if exc.response_status_code != 401:
                    raise _run_error(exc) from None
                client.credential.drop()
                if renewed:
                    raise _refused_fresh_token(exc) from None
                renewed = True


def _import_sdk() -> None:
    for name in _SDK_MODULES:
        importlib.import_module(name)


def _build_sdk(
    http: httpx.AsyncClient, base_url: str, credential: _Credential
) -> GraphServiceClient:
    from kiota_abstractions.authentication import (  # noqa: PLC0415
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from msgraph.graph_request_adapter import GraphRequestAdapter  # noqa: PLC0415
    from msgraph.graph_service_client import GraphServiceClient  # noqa: PLC0415

    hosts = AllowedHostsValidator([urlsplit(base_url).hostname or ""])

    # Defined here because its base class lives in the lazily imported SDK.
    class BearerTokens(AccessTokenProvider):
        """Our token for Graph's host only; any other URL goes without one."""

        async def get_authorization_token(
            self, uri: str, additional_authentication_context: dict[str, Any] | None = None
        ) -> str:
            del additional_authentication_context  # claims challenges (CAE) are not ours
            return await credential.token() if hosts.is_url_host_valid(uri) else ""

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return hosts

    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(BearerTokens()), http)
    adapter.base_url = base_url  # before the client, which would set graph.microsoft.com
    return GraphServiceClient(request_adapter=adapter)


def _answered(exc: APIError) -> str:
    """``Microsoft Graph answered HTTP <status> (<code>: <message>)``."""
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError  # noqa: PLC0415

    detail = exc.message or type(exc).__name__
    if isinstance(exc, ODataError) and exc.error is not None:
        detail = f"{exc.error.code}: {exc.error.message}"
    status = exc.response_status_code
    return f"{_PROVIDER} answered HTTP {status} ({' '.join(detail.split())[:_MAX_DETAIL]})"


def _refused_fresh_token(exc: APIError) -> ConfigurationError:
    msg = (
        f"{_answered(exc)} to a token just fetched: {_PROVIDER} refused a fresh token; "
        "check that graph.tenant_id (or graph.token_url) and graph.client_id name the "
        "app registration for this tenant, and graph.scope (graph.delegated_scope for "
        "Teams channel posts)"
    )
    return ConfigurationError(msg)


def _run_error(exc: APIError) -> JobsError:
    """What a Graph error answer (not a 401) means for the run."""
    status = exc.response_status_code
    message = _answered(exc)
    if status is None or status in (408, 429) or status >= 500:
        headers = httpx.Headers(exc.response_headers or {})
        return RetryLater(message, retry_after=retry_after_s(headers))
    return PermanentError(message)


def _required(value: str | None, key: str, why: str) -> str:
    if not value:
        msg = f"graph.{key} is not set: [graph] {key} {why}"
        raise ConfigurationError(msg)
    return value


def _no_clear_text(url: str, key: str) -> str:
    """``url``, unless secrets sent to it would cross a network in clear text.

    kiota's bearer provider sends the token wherever it is told (only azure-identity's
    provider insists on https), so the rule lives here: https, or plain http to loopback.
    """
    if urlsplit(url).scheme != "https" and not is_loopback_host(urlsplit(url).hostname or ""):
        msg = (
            f"graph.{key} {url!r} must be https: plain http is only for a test server on "
            "loopback, never for tokens or secrets on a network"
        )
        raise ConfigurationError(msg)
    return url


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _html(content: str) -> ItemBody:
    from msgraph.generated.models.body_type import BodyType  # noqa: PLC0415
    from msgraph.generated.models.item_body import ItemBody  # noqa: PLC0415

    return ItemBody(content_type=BodyType.Html, content=content)


def _address(address: str) -> EmailAddress:
    from msgraph.generated.models.email_address import EmailAddress  # noqa: PLC0415

    return EmailAddress(address=address)


def _recipient(address: str) -> Recipient:
    from msgraph.generated.models.recipient import Recipient  # noqa: PLC0415

    return Recipient(email_address=_address(address))


def _utc(moment: datetime) -> DateTimeTimeZone:
    from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone  # noqa: PLC0415

    if moment.utcoffset() is None:
        msg = "event times need a UTC offset: a naive time is ambiguous"
        raise ValueError(msg)
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return DateTimeTimeZone(date_time=utc.isoformat(timespec="seconds"), time_zone="UTC")
