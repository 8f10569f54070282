"""A client that leaves a run's event stream frees what it held, on a real uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import httpx
import pytest
import uvicorn

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from jobs_service.gateway.run_feeds import RunFeeds
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
