"""What a result's content and title do to the mail and Teams messages rendered from
them, sent to the fake Graph and Teams Workflows servers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import httpx
import orjson
import pytest

from jobs_service.agents.delivery import TEAMS_HTML_BYTES, ResultDelivery, RunResult
from jobs_service.agents.teams import TeamsWorkflows
from jobs_service.core.delivery import DeliverTo
from jobs_service.core.settings import ChannelSettings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from tests.integration.agents.test_graph_agent import (  # noqa: F401 - fixtures
    agent,
    graph,
    token_url,
    tokens,
)
from tests.support.fakes.server import serve
from tests.support.fakes.teams import FakeTeamsWorkflows

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from jobs_service.agents.graph import GraphAgent
    from jobs_service.core.settings import Settings
    from tests.support.fakes.graph import FakeGraph

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions"),
]

#: What a domain answer can carry when it quotes outside data (a lead's name from a
#: webhook, a ticket title): raw HTML and a javascript: link, written as markdown.
HOSTILE = (
    'New lead: <img src="https://tracker.example/p.gif">'
    '<a href="https://evil.example/login">Reset your password</a>'
    '<div style="display:none">\n\n'
    "[details](javascript:alert(document.cookie))"
)
#: About 28 KB: what Teams accepts at most.
TEAMS_MESSAGE_LIMIT = 28 * 1024
GRAPH_CHANNEL = {"teams": {"ops": {"team_id": "team-1", "channel_id": "19:abc@thread.tacv2"}}}
PROMPT = "Summarise last week's signups by region and flag anomalies. "


@pytest.fixture
async def database(make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    settings = make_settings()
    database = Database(settings.database_url, settings.database)
    await migrate.upgrade(database)
    yield database
    await database.close()


async def test_raw_html_in_the_content_is_shown_as_text_in_the_mail(
    agent: GraphAgent,  # noqa: F811
    graph: FakeGraph,  # noqa: F811
    database: Database,
) -> None:
    """Python-Markdown passed raw HTML through: the mail sent from the company mailbox
    carried the content's tracking pixel, phishing link and an unclosed hidden <div>
    that hid everything after it (the counts table, the run id). Now it is text."""
    async with httpx.AsyncClient() as http:
        delivery = ResultDelivery(database, ChannelSettings(), TeamsWorkflows(http), lambda: agent)
        await delivery.deliver(
            RunResult("run-h1", "crm: lead", {"processed": 1, "errors": 0}, HOSTILE),
            DeliverTo(email=["ops@example.com"]),
        )
    [mail] = graph.sent_mail
    html = mail["message"]["body"]["content"]
    assert "<img" not in html, html
    assert "<div" not in html, html
    assert 'href="https://evil.example' not in html, html
    assert "javascript:" not in html, html
    assert "&lt;img src=&quot;https://tracker.example/p.gif&quot;&gt;" in html
    assert "<p>details</p>" in html
    assert "<tr><td>processed</td><td>1</td></tr>" in html


async def test_a_long_title_still_fits_a_teams_message(database: Database) -> None:
    """run_agent_task titles its result "<agent>: <message>", and message is an
    unbounded argument (a prompt). Only the content was cut for Teams, so a 20 KB
    prompt plus a 16 KB report made a card over Teams' 28 KB limit."""
    teams = FakeTeamsWorkflows()
    with serve(teams.app) as base:
        channels = ChannelSettings.model_validate(
            {"teams": {"sales": {"webhook_url": teams.url(base, "sales")}}}
        )
        async with httpx.AsyncClient() as http:
            delivery = ResultDelivery(database, channels, TeamsWorkflows(http), lambda: None)  # type: ignore[arg-type,return-value]
            await delivery.deliver(
                RunResult("run-t1", f"kpi: {PROMPT * 330}", {"errors": 0}, "x" * 40_000),
                DeliverTo(teams_channel="sales"),
            )
    [post] = teams.posts["sales"]
    assert len(orjson.dumps(post)) <= TEAMS_MESSAGE_LIMIT
    title = post["attachments"][0]["content"]["body"][0]["text"]
    assert len(title) == 255
    assert title.endswith("…")


async def test_a_long_title_still_fits_a_teams_message_sent_through_graph(
    agent: GraphAgent,  # noqa: F811
    graph: FakeGraph,  # noqa: F811
    database: Database,
) -> None:
    """The Graph route halved the content until the HTML fit, but never cut the title:
    with a long enough title the loop ended at an empty content and still sent more
    than TEAMS_HTML_BYTES. The mail's subject (the title, when none is given) is cut
    to 255 characters too."""
    channels = ChannelSettings.model_validate(GRAPH_CHANNEL)
    async with httpx.AsyncClient() as http:
        delivery = ResultDelivery(database, channels, TeamsWorkflows(http), lambda: agent)
        await delivery.deliver(
            RunResult("run-t2", f"kpi: {PROMPT * 500}", {"errors": 0}, "report"),
            DeliverTo(teams_channel="ops", email=["ops@example.com"]),
        )
    [message] = graph.channel_messages
    assert len(message["body"]["content"].encode()) <= TEAMS_HTML_BYTES
    assert "<p>report</p>" in message["body"]["content"]
    [mail] = graph.sent_mail
    assert len(mail["message"]["subject"]) == 255


async def test_rendering_a_large_result_does_not_stall_the_workers_event_loop(
    agent: GraphAgent,  # noqa: F811
    graph: FakeGraph,  # noqa: F811
    database: Database,
) -> None:
    """Rendering ran on the event loop, and the Graph Teams route rendered the whole
    content before cutting it, then again per halving: a 1 MB report (a 50,000-row
    table) to a Graph channel and a mailbox blocked every other task of the worker,
    lease renewals included, for 5-10 s. Content is now cut to its budget before it is
    rendered, and rendered in a thread.

    The bound is deliberately generous (1 s against about 0.2 s measured), so a slow or
    loaded machine does not fail it while a rendering on the loop (seconds) still would.
    A small result is delivered first, so the Graph client's first build (an import of
    the SDK, up to a second on a loaded machine) is not counted against the rendering."""
    channels = ChannelSettings.model_validate(GRAPH_CHANNEL)
    async with httpx.AsyncClient() as http:
        await ResultDelivery(database, channels, TeamsWorkflows(http), lambda: agent).deliver(
            RunResult("run-warm", "report", {"errors": 0}, "warm-up"),
            DeliverTo(teams_channel="ops", email=["ops@example.com"]),
        )
    table = "| name | count |\n|---|---|\n" + "| <x&y> **b** | 1 |\n" * 50_000
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        last = time.monotonic()
        while not done:
            await anyio.sleep(0.05)
            now = time.monotonic()
            worst = max(worst, now - last)
            last = now

    async with httpx.AsyncClient() as http, anyio.create_task_group() as group:
        group.start_soon(ticker)
        delivery = ResultDelivery(database, channels, TeamsWorkflows(http), lambda: agent)
        await delivery.deliver(
            RunResult("run-big", "report", {"errors": 0}, table),
            DeliverTo(teams_channel="ops", email=["ops@example.com"]),
        )
        done = True
    assert worst < 1.0, f"the event loop was blocked for {worst:.1f} s"
    [_, message] = graph.channel_messages
    assert len(message["body"]["content"].encode()) <= TEAMS_HTML_BYTES
    [_, mail] = graph.sent_mail
    assert (
        "cut to fit an email: the whole result is on run run-big"
        in (mail["message"]["body"]["content"])
    )
