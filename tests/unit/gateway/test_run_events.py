"""`GET /v1/runs/{run_id}/events` on the embedded default (in-process broker, SQLite)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

READER = "read-key-run-events"
OPERATOR = "operate-key-run-events"
UNKNOWN_RUN = "0" * 32


def _settings(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    keys = [
        {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "scopes": scopes}
        for name, key, scopes in (("reader", READER, ["read"]), ("op", OPERATOR, ["operate"]))
    ]
    return make_settings(
        api_keys=keys,
        api={"events_poll_interval_ms": 50, "events_heartbeat_s": 0.2},
        runs={"progress_flush_interval_ms": 20},
        **overrides,
    )


def _auth(key: str = READER) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def parse_events(text: str) -> list[dict[str, Any]]:
    """The events of an SSE body (comments and `retry:` left out), data decoded."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":") or ": " not in line:
                continue
            name, value = line.split(": ", 1)
            fields[name] = orjson.loads(value) if name == "data" else value
        if "event" in fields:
            events.append(fields)
    return events


async def test_the_stream_shows_each_progress_and_ends_with_the_final_status(
    make_settings: Callable[..., Settings],
) -> None:
    """A run reporting four steps 150 ms apart: its stream has status running, the
    progress events in order (25 → 100), and ends with `succeeded` (id `end`);
    GET /v1/runs/{id} then shows the final progress."""
    app = create_app(_settings(make_settings), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        submitted = await client.post(
            "/v1/tasks/report_steps",
            json={"kwargs": {"steps": 4, "pause_s": 0.15}},
            headers=_auth(OPERATOR),
        )
        run_id = submitted.json()["run_id"]
        streamed = await client.get(f"/v1/runs/{run_id}/events", headers=_auth(), timeout=20)
        final = (await client.get(f"/v1/runs/{run_id}", headers=_auth())).json()
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["cache-control"] == "no-store"  # as every /v1/ answer
    assert streamed.text.startswith("retry: ")
    events = parse_events(streamed.text)
    progress = [event["data"]["percent"] for event in events if event["event"] == "progress"]
    assert progress == sorted(progress)
    assert progress[-1] == 100
    assert len(progress) >= 3  # 150 ms apart, polled every 50 ms: most steps are seen
    statuses = [event["data"]["status"] for event in events if event["event"] == "status"]
    assert statuses[-1] == "succeeded"
    assert "running" in statuses
    last = events[-1]
    assert (last["event"], last["id"]) == ("status", "end")
    assert last["data"]["summary"] == {"processed": 4, "errors": 0}
    ids = [int(event["id"]) for event in events[:-1]]
    assert ids == sorted(set(ids))
    assert final["progress"]["percent"] == 100
    assert final["progress"]["message"] == "step 4 of 4"
    assert final["progress"]["attempt"] == 1


async def test_a_finished_run_streams_its_final_state_and_a_reconnect_after_the_end_gets_204(
    make_settings: Callable[..., Settings],
) -> None:
    """Connecting after the end: the final progress and status at once; EventSource's
    reconnect with `Last-Event-ID: end` is told to stop (204); another id starts over
    with ids after it."""
    app = create_app(_settings(make_settings), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        submitted = await client.post(
            "/v1/tasks/report_steps", json={"kwargs": {"steps": 2}}, headers=_auth(OPERATOR)
        )
        run_id = submitted.json()["run_id"]
        await broker.wait_all()  # type: ignore[attr-defined]
        await app.state.runtime.recorder.wait_flushed()
        first = await client.get(f"/v1/runs/{run_id}/events", headers=_auth())
        ended = await client.get(
            f"/v1/runs/{run_id}/events", headers={**_auth(), "Last-Event-ID": "end"}
        )
        resumed = await client.get(
            f"/v1/runs/{run_id}/events", headers={**_auth(), "Last-Event-ID": "41"}
        )
    events = parse_events(first.text)
    assert [(event["event"], event["id"]) for event in events] == [
        ("progress", "1"),
        ("status", "end"),
    ]
    assert events[0]["data"]["percent"] == 100
    assert events[1]["data"]["status"] == "succeeded"
    assert ended.status_code == 204
    assert [event["id"] for event in parse_events(resumed.text)] == ["42", "end"]


async def test_unknown_runs_are_404_problems_and_the_read_scope_is_required(
    make_settings: Callable[..., Settings],
) -> None:
    """Before any event: an unknown run id is a 404 problem, a missing key 401, a key
    without `read` 403."""
    app = create_app(_settings(make_settings), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        unknown = await client.get(f"/v1/runs/{UNKNOWN_RUN}/events", headers=_auth())
        anonymous = await client.get(f"/v1/runs/{UNKNOWN_RUN}/events")
        no_read = await client.get(f"/v1/runs/{UNKNOWN_RUN}/events", headers=_auth(OPERATOR))
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["type"].endswith("unknown-run")
    assert anonymous.status_code == 401
    assert no_read.status_code == 403
