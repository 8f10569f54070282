"""Clients that leave before their answer, on a real uvicorn server and PostgreSQL: one
that leaves a run's event stream frees what it held without cutting off a database
read; one that leaves mid-body is logged as gone."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn

from jobs_service.broker import broker
from jobs_service.core.ids import new_run_id
from jobs_service.core.settings import DatabaseSettings
from jobs_service.gateway import create_app
from jobs_service.gateway.run_events import event_stream
from jobs_service.gateway.run_feeds import RunFeeds, RunState
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.repositories import runs
from tests.support.processes import free_port

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio


async def test_a_client_that_disconnects_stops_the_polling_of_its_run(
    make_settings: Callable[..., Settings],
) -> None:
    """A 3 s run is watched, then the client goes away: within a heartbeat the gateway
    notices, the run is no longer watched and nothing polls the database for it."""
    settings = make_settings(api={"events_poll_interval_ms": 50, "events_heartbeat_s": 0.2})
    app = create_app(settings, broker=broker, embedded=True, scheduler=False, announce=False)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            for _ in range(500):
                if server.started:
                    break
                await asyncio.sleep(0.02)
            submitted = await client.post("/v1/tasks/sleep_for", json={"kwargs": {"seconds": 3}})
            run_id = submitted.json()["run_id"]
            async with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
                lines = response.aiter_lines()
                while "event: status" not in await anext(lines):
                    pass
                feeds = app.state.runtime.resource("run-feeds", lambda: None)
                assert isinstance(feeds, RunFeeds)
                assert (feeds.watched, feeds.polling) == (1, True)
        for _ in range(20):  # gone: within 1 s (the run itself lasts 3 s)
            if not feeds.polling:
                break
            await asyncio.sleep(0.05)
        assert (feeds.watched, feeds.polling) == (0, False)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(serving, 30)


async def test_a_client_that_leaves_mid_body_is_logged_and_audited_as_gone_not_400(
    make_settings: Callable[..., Settings], capfd: pytest.CaptureFixture[str]
) -> None:
    """A submit whose client closes the connection before its body has arrived is
    answered to nobody: the request log says 499 (not FastAPI's 400 for an unreadable
    body), the audit entry's outcome is 499, and no run is queued."""
    settings = make_settings()
    app = create_app(settings, broker=broker, embedded=True, scheduler=False, announce=False)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.02)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/tasks/count_items HTTP/1.1\r\nHost: gateway\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            b'{"kwargs": {"items": ['
        )
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()  # gone before the rest of the body
        await writer.wait_closed()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            logged = ""
            for _ in range(100):  # the request's log line is written once it has ended
                logged += capfd.readouterr().err
                if '"http-request"' in logged:
                    break
                await asyncio.sleep(0.02)
            audit = (await client.get("/v1/audit")).json()["items"]
            queued = (await client.get("/v1/runs")).json()["items"]
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(serving, 30)
    requests = [line for line in logged.splitlines() if '"http-request"' in line]
    assert len(requests) == 1
    assert '"path":"/v1/tasks/count_items"' in requests[0]
    assert '"status":499' in requests[0], requests[0]
    assert [(entry["action"], entry["outcome"]) for entry in audit] == [
        ("POST /v1/tasks/{name}", 499)
    ]
    assert queued == []


async def test_clients_leaving_run_streams_never_cut_off_a_postgresql_read(
    pg_url: str,
) -> None:
    """300 clients of one run, one after another, each leaving at a random moment while
    the poller (polling every 0.5 ms) is almost always inside its SELECT: no asyncpg
    connection is torn down ("unexpected connection_lost() call") and no future is
    left with an unretrieved exception."""
    database = Database(pg_url, DatabaseSettings(pool_size=2, max_overflow=0))
    run_id = new_run_id()
    async with database.engine.begin() as connection:
        await runs.insert_queued_runs(
            connection, [runs.QueuedRun(run_id, "report_steps", {}, "api", datetime.now(UTC))]
        )
    async with database.sessions() as session:
        found = await runs.get_run(session, run_id=run_id)
    assert found is not None
    state = RunState.of(found)
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: loop_errors.append(context))
    feeds = RunFeeds(database, poll_interval_s=0.0005)
    try:
        for _ in range(300):
            stream = event_stream(feeds, state, heartbeat_s=0.01, retry_ms=0)
            await anext(stream)
            await anext(stream)
            await asyncio.sleep(random.random() * 0.004)
            await stream.aclose()
        await asyncio.sleep(0.2)
    finally:
        await feeds.aclose()
        await database.close()
        gc.collect()  # a never-retrieved exception is reported when its future is collected
        await asyncio.sleep(0)
        loop.set_exception_handler(None)
    assert [str(context.get("exception") or context["message"]) for context in loop_errors] == []
