"""The Graph agent against a fake Graph and a fake token endpoint on loopback."""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from jobs_service.agents.delivery import TEAMS_HTML_BYTES, ResultDelivery, RunResult
from jobs_service.agents.graph import GraphAgent, MailAttachment
from jobs_service.agents.teams import TeamsWorkflows
from jobs_service.core.delivery import DeliverTo
from jobs_service.core.errors import ConfigurationError, PermanentError, RetryLater
from jobs_service.core.settings import ChannelSettings, GraphSettings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from tests.support.fakes.graph import FakeGraph
from tests.support.fakes.server import serve
from tests.support.fakes.tokens import FakeTokenEndpoint
from tests.support.processes import ROOT, free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from jobs_service.core.settings import Settings

pytestmark = [
    pytest.mark.anyio,
    # The SDK's generated classes warn about their own deprecations as they are imported.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions"),
]

SENDER = "jobs@example.com"


@pytest.fixture
def tokens() -> FakeTokenEndpoint:
    """The identity platform; it issues ``app-token-N`` and, for refresh tokens,
    ``user-token-N``."""
    return FakeTokenEndpoint()


@pytest.fixture
def token_url(tokens: FakeTokenEndpoint) -> Iterator[str]:
    """Where the fake identity platform answers."""
    with serve(tokens.app) as url:
        yield f"{url}/token"


@pytest.fixture
def graph(tokens: FakeTokenEndpoint) -> Iterator[FakeGraph]:
    """Graph, accepting only the tokens the fake endpoint issued."""
    fake = FakeGraph(valid_token=tokens.valid)
    with serve(fake.app) as url:
        fake.base_url = f"{url}/v1.0"
        yield fake


def graph_settings(token_endpoint: str, graph: FakeGraph, **overrides: Any) -> GraphSettings:
    """A complete ``[graph]`` pointing at the fakes, but for ``overrides``."""
    values: dict[str, Any] = {
        "token_url": token_endpoint,
        "client_id": "jobs-client",
        "client_secret": "jobs-secret",
        "base_url": graph.base_url,
        "sender": SENDER,
        "delegated_refresh_token": "refresh-1",
        "timeout_s": 10,
    }
    return GraphSettings(**(values | overrides))


@pytest.fixture
async def agent(token_url: str, graph: FakeGraph) -> AsyncIterator[GraphAgent]:
    """An agent with a complete ``[graph]``."""
    agent = GraphAgent(graph_settings(token_url, graph))
    yield agent
    await agent.aclose()


async def test_mail_arrives_with_html_cc_attachment_and_the_app_token(
    agent: GraphAgent, graph: FakeGraph
) -> None:
    """sendMail carries the HTML body, recipients, a base64 file attachment, the delivery
    key header and an app-only bearer token."""
    report = MailAttachment("report.csv", "text/csv", b"day,total\n2026-01-05,42\n")
    await agent.send_mail(
        to=["ops@example.com"],
        cc=["boss@example.com"],
        subject="Daily KPIs",
        html="<h1>KPIs</h1><p>42</p>",
        attachments=[report],
        idempotency_key="run-1:email",
    )
    [request] = graph.requests
    assert request.method == "POST"
    assert request.path == f"/v1.0/users/{SENDER}/sendMail"
    assert request.token == "app-token-1"
    [mail] = graph.sent_mail
    assert mail["savetosentitems"] is True
    message = mail["message"]
    assert message["subject"] == "Daily KPIs"
    assert message["body"] == {"contentType": "html", "content": "<h1>KPIs</h1><p>42</p>"}
    assert message["toRecipients"] == [{"emailAddress": {"address": "ops@example.com"}}]
    assert message["ccRecipients"] == [{"emailAddress": {"address": "boss@example.com"}}]
    [attachment] = message["attachments"]
    assert attachment["@odata.type"] == "#microsoft.graph.fileAttachment"
    assert (attachment["name"], attachment["contentType"]) == ("report.csv", "text/csv")
    assert base64.b64decode(attachment["contentBytes"]) == report.content
    assert message["internetMessageHeaders"] == [
        {"name": "X-Jobs-Delivery-Key", "value": "run-1:email"}
    ]


async def test_the_token_is_fetched_once_for_several_calls(
    agent: GraphAgent, graph: FakeGraph, tokens: FakeTokenEndpoint
) -> None:
    """Mail and events share one cached client-credentials token."""
    for index in range(3):
        await agent.send_mail(to=["ops@example.com"], subject=f"#{index}", html="<p>hi</p>")
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    await agent.create_event(subject="Review", html="<p>x</p>", start=start, end=start)
    assert tokens.grants("client_credentials") == 1
    assert {request.token for request in graph.requests} == {"app-token-1"}
    assert tokens.requests[0]["scope"] == "https://graph.microsoft.com/.default"


async def test_a_429_is_left_to_the_run_with_its_retry_after(
    agent: GraphAgent, graph: FakeGraph
) -> None:
    """Throttling is not waited out inside the task's slot: it is RetryLater carrying
    Retry-After (the run's retry waits at least that), after one request."""
    graph.fail_next("/sendMail", 429, count=1, retry_after="1")
    with pytest.raises(RetryLater) as caught:
        await agent.send_mail(to=["ops@example.com"], subject="KPIs", html="<p>42</p>")
    assert caught.value.retry_after == 1.0
    assert "HTTP 429" in str(caught.value)
    assert "TooManyRequests" in str(caught.value)
    assert len(graph.requests_to("/sendMail")) == 1
    assert graph.sent_mail == []
    await agent.send_mail(to=["ops@example.com"], subject="KPIs", html="<p>42</p>")
    assert len(graph.sent_mail) == 1


@pytest.mark.parametrize("status", [503, 504])
async def test_a_post_graph_may_have_carried_out_is_not_sent_again_by_the_sdk(
    agent: GraphAgent, graph: FakeGraph, status: int
) -> None:
    """The SDK used to re-send a sendMail answered 503/504 up to three times: when Graph
    had sent the mail before failing, each was a duplicate no delivery record saw."""
    graph.fail_next("/sendMail", status, count=1, retry_after="1")
    with pytest.raises(RetryLater):
        await agent.send_mail(to=["ops@example.com"], subject="KPIs", html="<p>42</p>")
    assert len(graph.requests_to("/sendMail")) == 1


async def test_a_long_retry_after_is_left_to_the_run(agent: GraphAgent, graph: FakeGraph) -> None:
    """A 503 asking for 5 minutes is not waited out in-process: the run retries later."""
    graph.fail_next("/events", 503, count=1, retry_after="300")
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    with pytest.raises(RetryLater) as caught:
        await agent.create_event(subject="Review", html="<p>x</p>", start=start, end=start)
    assert caught.value.retry_after == 300.0
    assert len(graph.requests_to("/events")) == 1


async def test_a_400_is_permanent_and_names_graphs_code(
    agent: GraphAgent, graph: FakeGraph
) -> None:
    """A recipient Graph refuses fails the delivery for good, with Graph's error code."""
    with pytest.raises(PermanentError) as caught:
        await agent.send_mail(to=["not-an-address"], subject="KPIs", html="<p>42</p>")
    message = str(caught.value)
    assert "HTTP 400" in message
    assert "ErrorInvalidRecipients" in message
    assert "app-token" not in message
    assert len(graph.requests_to("/sendMail")) == 1  # a 400 is not retried


async def test_a_401_drops_the_token_and_the_call_is_sent_again_with_a_new_one(
    agent: GraphAgent, graph: FakeGraph, tokens: FakeTokenEndpoint
) -> None:
    """A token Graph no longer accepts (revoked, expired early) is dropped, and the call
    is sent once more with a new one: Graph carried out nothing it refused."""
    await agent.send_mail(to=["ops@example.com"], subject="1", html="<p>1</p>")
    tokens.revoke_all()
    await agent.send_mail(to=["ops@example.com"], subject="2", html="<p>2</p>")
    await agent.send_mail(to=["ops@example.com"], subject="3", html="<p>3</p>")
    assert [request.token for request in graph.requests] == [
        "app-token-1",
        "app-token-1",
        "app-token-2",
        "app-token-2",
    ]
    assert [mail["message"]["subject"] for mail in graph.sent_mail] == ["1", "2", "3"]


@pytest.mark.parametrize("call", ["mail", "event", "channel"])
async def test_a_fresh_token_refused_too_is_a_configuration_error(
    agent: GraphAgent, graph: FakeGraph, tokens: FakeTokenEndpoint, call: str
) -> None:
    """Graph refusing a token it was just given (another tenant's app, a wrong scope)
    was RetryLater: each attempt fetched a new token, was refused again, and the run
    ended dead after all its retries. It is now a configuration error after one new
    token, naming the settings to check."""
    graph.valid_token = lambda authorization: False
    with pytest.raises(ConfigurationError, match="refused a fresh token") as caught:
        await use(agent, call)
    assert "InvalidAuthenticationToken" in str(caught.value)
    assert "graph.tenant_id" in str(caught.value)
    assert len(graph.requests) == 2
    assert len(tokens.requests) == 2


async def test_a_missing_msgraph_sdk_is_a_configuration_error(
    agent: GraphAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An install without msgraph-sdk failed each Graph delivery as an unexpected error
    (PermanentError, with a traceback in the log); it names what to install instead."""
    monkeypatch.setitem(sys.modules, "msgraph", None)  # import of msgraph now fails
    with pytest.raises(ConfigurationError, match="need msgraph-sdk, which cannot be imported"):
        await agent.send_mail(to=["ops@example.com"], subject="s", html="h")


async def test_an_unreachable_graph_is_retry_later(token_url: str) -> None:
    """A refused connection (nothing listens) is transient, not a failed delivery."""
    graph = FakeGraph(base_url=f"http://127.0.0.1:{free_port()}/v1.0")
    agent = GraphAgent(graph_settings(token_url, graph))
    try:
        with pytest.raises(RetryLater, match="Microsoft Graph unreachable: ConnectError"):
            await agent.send_mail(to=["ops@example.com"], subject="KPIs", html="<p>42</p>")
    finally:
        await agent.aclose()


async def test_an_event_returns_its_id_and_is_idempotent_by_transaction_id(
    agent: GraphAgent, graph: FakeGraph
) -> None:
    """The same idempotency key twice gives the same event, as Graph's transactionId does;
    times are sent in UTC."""
    start = datetime(2026, 1, 5, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    details: dict[str, Any] = {
        "subject": "KPI review",
        "html": "<p>Numbers</p>",
        "start": start,
        "end": start + timedelta(minutes=30),
        "attendees": ["ops@example.com", "boss@example.com"],
    }
    first = await agent.create_event(**details, idempotency_key="run-7:calendar")
    again = await agent.create_event(**details, idempotency_key="run-7:calendar")
    other = await agent.create_event(**details, idempotency_key="run-8:calendar")
    assert first == again != other
    assert set(graph.events) == {first, other}
    request = graph.requests_to("/events")[0]
    assert request.path == f"/v1.0/users/{SENDER}/events"
    event = request.json
    assert event["transactionId"] == "run-7:calendar"
    assert event["start"] == {"dateTime": "2026-01-05T09:30:00", "timeZone": "UTC"}
    assert event["end"] == {"dateTime": "2026-01-05T10:00:00", "timeZone": "UTC"}
    assert event["body"] == {"contentType": "html", "content": "<p>Numbers</p>"}
    assert [a["emailAddress"]["address"] for a in event["attendees"]] == details["attendees"]
    assert {a["type"] for a in event["attendees"]} == {"required"}


async def test_a_channel_message_uses_the_delegated_token(
    agent: GraphAgent, graph: FakeGraph, tokens: FakeTokenEndpoint
) -> None:
    """Channel posts go with a user's token from the refresh-token grant; mail keeps the
    app's token."""
    message_id = await agent.post_channel_message(
        team_id="team-1", channel_id="19:abc@thread.tacv2", html="<b>Done</b>"
    )
    await agent.send_mail(to=["ops@example.com"], subject="KPIs", html="<p>42</p>")
    [message] = graph.channel_messages
    assert message_id == message["id"]
    assert message["body"] == {"contentType": "html", "content": "<b>Done</b>"}
    post = graph.requests_to("/messages")[0]
    assert post.path == "/v1.0/teams/team-1/channels/19:abc@thread.tacv2/messages"
    assert post.token == "user-token-1"
    assert graph.requests_to("/sendMail")[0].token == "app-token-2"
    refresh = next(r for r in tokens.requests if r["grant_type"] == "refresh_token")
    assert refresh["scope"] == "https://graph.microsoft.com/ChannelMessage.Send offline_access"
    assert tokens.grants("client_credentials") == 1


async def test_an_expired_refresh_token_names_the_setting_to_renew(
    token_url: str, graph: FakeGraph
) -> None:
    """``invalid_grant`` on the refresh-token grant is the user's token, not the app's
    client id and secret, which the message used to send the operator to check."""
    agent = GraphAgent(graph_settings(token_url, graph, delegated_refresh_token="expired"))
    try:
        with pytest.raises(ConfigurationError) as caught:
            await agent.post_channel_message(team_id="t", channel_id="c", html="h")
    finally:
        await agent.aclose()
    assert "renew graph.delegated_refresh_token" in str(caught.value)
    assert "client_secret" not in str(caught.value)
    assert graph.channel_messages == []


async def use(agent: GraphAgent, call: str) -> None:
    """One call of each kind, with throwaway content."""
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    if call == "mail":
        await agent.send_mail(to=["ops@example.com"], subject="s", html="h")
    elif call == "event":
        await agent.create_event(subject="s", html="h", start=start, end=start)
    else:
        await agent.post_channel_message(team_id="t", channel_id="c", html="h")


@pytest.mark.parametrize(
    ("missing", "call", "setting"),
    [
        ({"client_id": None}, "mail", "graph.client_id is not set"),
        ({"client_secret": None}, "event", "graph.client_secret is not set"),
        ({"token_url": None}, "mail", "graph.token_url is not set"),
        ({"sender": None}, "mail", "graph.sender is not set: [graph] sender is the mailbox"),
        ({"sender": None}, "event", "graph.sender is not set"),
        ({"delegated_refresh_token": None}, "channel", "graph.delegated_refresh_token is not"),
        ({"base_url": "http://graph.example.com/v1.0"}, "mail", "graph.base_url"),
        ({"token_url": "http://login.example.com/t"}, "channel", "graph.token_url"),
    ],
)
async def test_an_incomplete_graph_section_fails_only_when_used(
    *,
    tokens: FakeTokenEndpoint,
    token_url: str,
    graph: FakeGraph,
    missing: dict[str, Any],
    call: str,
    setting: str,
) -> None:
    """Construction never fails; the call that needs a setting names it, before any
    request."""
    agent = GraphAgent(graph_settings(token_url, graph, **missing))
    try:
        with pytest.raises(ConfigurationError) as caught:
            await use(agent, call)
    finally:
        await agent.aclose()
    assert setting in str(caught.value)
    assert tokens.requests == []
    assert graph.requests == []


async def test_a_refused_client_secret_is_a_configuration_error(
    token_url: str, graph: FakeGraph
) -> None:
    """The token endpoint's verdict passes through the SDK unchanged and names the keys."""
    agent = GraphAgent(graph_settings(token_url, graph, client_secret="wrong"))
    try:
        with pytest.raises(ConfigurationError, match=r"graph\.client_secret"):
            await agent.send_mail(to=["ops@example.com"], subject="s", html="h")
    finally:
        await agent.aclose()
    assert graph.requests == []


async def test_an_empty_graph_section_builds_and_closes() -> None:
    """An agent from an empty ``[graph]`` is harmless until used; closing it is safe."""
    agent = GraphAgent(GraphSettings())
    await agent.aclose()
    with pytest.raises(ConfigurationError, match=r"graph\.sender is not set"):
        await agent.send_mail(to=["ops@example.com"], subject="s", html="h")
    with pytest.raises(ConfigurationError, match=r"graph\.client_id is not set"):
        await agent.post_channel_message(team_id="t", channel_id="c", html="h")
    await agent.aclose()


@pytest.mark.parametrize(
    ("attachment", "code"),
    [
        ({"name": "a.txt", "contentBytes": "aGk="}, "ErrorInvalidAttachment"),
        (
            {"@odata.type": "#microsoft.graph.fileAttachment", "name": "a", "contentBytes": "hi!"},
            "RequestBodyRead",
        ),
    ],
)
def test_the_fake_refuses_attachments_graph_refuses(
    graph: FakeGraph, token_url: str, attachment: dict[str, Any], code: str
) -> None:
    """The fake's checks are real: a file attachment without its @odata.type or with
    contentBytes that are not base64 is a 400 with Graph's error shape."""
    token = httpx.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": "jobs-client",
            "client_secret": "jobs-secret",
        },
    ).json()["access_token"]
    message = {
        "subject": "s",
        "body": {"contentType": "html", "content": "h"},
        "toRecipients": [{"emailAddress": {"address": "ops@example.com"}}],
        "attachments": [attachment],
    }
    answer = httpx.post(
        f"{graph.base_url}/users/{SENDER}/sendMail",
        json={"message": message},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == code
    assert graph.sent_mail == []


def test_importing_the_agent_does_not_import_the_sdk() -> None:
    """msgraph (half a second, ~500 modules) loads on first use, not with the module."""
    code = (
        "import sys, jobs_service.agents.graph\n"
        "sdk = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'msgraph', 'msgraph_core', 'kiota_abstractions', 'kiota_http', 'azure'})\n"
        "print(sdk)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"


async def test_a_long_result_still_fits_a_teams_message_sent_through_graph(
    agent: GraphAgent, graph: FakeGraph, make_settings: Callable[..., Settings]
) -> None:
    """A markdown table grows about three times over as HTML: cutting the markdown to
    16 KB still left a 50 KB message, which Teams refuses. The HTML is what is bounded."""
    settings = make_settings()
    database = Database(settings.database_url, settings.database)
    await migrate.upgrade(database)
    channels = ChannelSettings.model_validate(
        {"teams": {"ops": {"team_id": "team-1", "channel_id": "19:abc@thread.tacv2"}}}
    )
    table = "| name | count |\n|---|---|\n" + "| <x&y> | 1 |\n" * 1_500
    try:
        async with httpx.AsyncClient() as http:
            delivery = ResultDelivery(database, channels, TeamsWorkflows(http), lambda: agent)
            await delivery.deliver(
                RunResult("run-6", "report", {"errors": 0}, table), DeliverTo(teams_channel="ops")
            )
    finally:
        await database.close()
    [message] = graph.channel_messages
    html = message["body"]["content"]
    assert len(html.encode()) <= TEAMS_HTML_BYTES
    assert html.count("<tr>") > 100  # still most of what fits
    assert "the whole result is on run run-6" in html
