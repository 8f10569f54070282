"""Text from outside (a domain answer, a provider's error) on the run's record: a NUL
character in it, which PostgreSQL refuses in text and jsonb, is recorded as U+FFFD."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from jobs_service.agents.delivery import ResultDelivery, RunResult
from jobs_service.agents.teams import TeamsWorkflows
from jobs_service.broker import broker
from jobs_service.core.delivery import DeliverTo
from jobs_service.core.errors import PermanentError
from jobs_service.core.settings import ChannelSettings, DatabaseSettings
from jobs_service.gateway import create_app
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import Delivery
from jobs_service.infrastructure.repositories import deliveries
from tests.conftest import serve_app
from tests.integration.agents.test_webhook_processing import Outside, outside  # noqa: F401
from tests.support.fakes.server import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from starlette.requests import Request

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pg_database(empty_pg_url: str) -> AsyncIterator[Database]:
    database = Database(empty_pg_url, DatabaseSettings())
    await migrate.upgrade(database)
    yield database
    await database.close()


def _settings(make_settings: Callable[..., Settings], outside: Outside, **extra: Any) -> Settings:  # noqa: F811
    return make_settings(
        domain_api={
            "base_url": outside.urls["domain"],
            "token_url": outside.urls["token"],
            "client_id": outside.tokens.client_id,
            "client_secret": outside.tokens.client_secret,
        },
        channels={
            "teams": {"sales": {"webhook_url": outside.teams.url(outside.urls["teams"], "sales")}}
        },
        **extra,
    )


async def _run_agent(settings: Settings) -> dict[str, Any]:
    """Submit run_agent_task (agent kpi, to Teams sales) and wait for its end."""
    app = create_app(settings, broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        submitted = await client.post(
            "/v1/tasks/run_agent_task",
            json={"kwargs": {"agent": "kpi", "deliver_to": {"teams_channel": "sales"}}},
        )
        run_id = submitted.json()["run_id"]
        detail: dict[str, Any] = {}
        for _ in range(100):
            await broker.wait_all()  # type: ignore[attr-defined]
            await app.state.runtime.recorder.wait_flushed()
            detail = (await client.get(f"/v1/runs/{run_id}")).json()
            if detail["status"] not in ("queued", "running"):
                break
            await anyio.sleep(0.05)
    return detail


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_a_nul_in_the_domains_content_does_not_lose_the_runs_record(
    make_settings: Callable[..., Settings],
    outside: Outside,  # noqa: F811
    pg_url: str,
    store: str,
) -> None:
    """The gateway refuses NUL characters in its inputs, but the domain answer's content
    was taken as is: on PostgreSQL the run's final record was refused
    (run-record-dropped), and the run stayed `running` after its card went out, without
    summary or content. Now it ends `succeeded`, its content with U+FFFD for the NUL on
    PostgreSQL (SQLite keeps the NUL)."""
    outside.domain.answers["agents/kpi"] = {
        "summary": {"processed": 1, "errors": 0},
        "content": "Weekly KPIs\u0000 (a stray NUL from a CSV export)",
    }
    extra = {"database_url": pg_url} if store == "postgresql" else {}
    detail = await _run_agent(_settings(make_settings, outside, **extra))
    assert len(outside.teams.cards("sales")) == 1  # delivered either way
    assert detail["status"] == "succeeded", detail
    kept = "\ufffd" if store == "postgresql" else "\u0000"
    assert detail["content"] == f"Weekly KPIs{kept} (a stray NUL from a CSV export)"
    assert detail["summary"] == {"processed": 1, "delivered": 1, "errors": 0}


async def test_a_nul_in_a_domain_error_is_recorded_on_the_failed_run(
    make_settings: Callable[..., Settings],
    outside: Outside,  # noqa: F811
    pg_url: str,
) -> None:
    """The error of a run comes from an exception, here the domain's 400 answer quoting
    the bad row: with a NUL in it, PostgreSQL refused the failed run's record too."""
    outside.domain.fail_next("agents/kpi", 400, detail="row 7 is 'ab\u0000c'")
    detail = await _run_agent(_settings(make_settings, outside, database_url=pg_url))
    assert detail["status"] == "failed", detail
    assert detail["error"]["type"] == "PermanentError"
    assert "row 7 is 'ab\ufffdc'" in detail["error"]["message"]


async def test_a_nul_in_a_providers_error_is_recorded_on_the_delivery(
    pg_database: Database,
) -> None:
    """A Teams answer whose error code holds a NUL: recording the failed delivery raised
    on PostgreSQL instead, so the delivery stayed `sending` without its error."""

    async def refuse(request: Request) -> JSONResponse:
        del request
        return JSONResponse({"error": {"code": "Bad\u0000Card"}}, status_code=400)

    app = Starlette(routes=[Route("/workflows/sales", refuse, methods=["POST"])])
    with serve(app) as base:
        channels = ChannelSettings.model_validate(
            {"teams": {"sales": {"webhook_url": f"{base}/workflows/sales?sig=s"}}}
        )
        async with httpx.AsyncClient() as http:
            delivery = ResultDelivery(pg_database, channels, TeamsWorkflows(http), lambda: None)  # type: ignore[arg-type,return-value]
            with pytest.raises(PermanentError, match="HTTP 400"):
                await delivery.deliver(
                    RunResult("run-nul-1", "report", {"errors": 0}, "hello"),
                    DeliverTo(teams_channel="sales"),
                )
    async with pg_database.sessions() as session:
        [row] = (await session.execute(select(Delivery))).scalars()
    assert row.status == "failed"
    assert row.error is not None
    assert "Bad\ufffdCard" in row.error["message"]


async def test_a_providers_odd_message_id_still_records_the_send(pg_database: Database) -> None:
    """A provider's message id is outside text too: a NUL in it, or more characters than
    the column holds, kept the send from being recorded, so a retry sent it again."""
    async with pg_database.engine.begin() as connection:
        claim = await deliveries.claim(
            connection,
            run_id="run-nul-2",
            channel="calendar",
            target="event",
            stale_after=timedelta(minutes=5),
        )
        await deliveries.mark_sent(connection, claim, provider_id="AAM\u0000" + "k" * 400)
    async with pg_database.sessions() as session:
        [row] = (await session.execute(select(Delivery))).scalars()
    assert row.status == "sent"
    assert row.provider_id is not None
    assert row.provider_id.startswith("AAM\ufffdkkk")
    assert len(row.provider_id) == 255
