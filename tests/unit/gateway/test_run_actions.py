"""Retry and cancel through the API, on the embedded default (in-process broker)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import TYPE_CHECKING, Any

import pytest
from taskiq import InMemoryBroker

from jobs_service.broker import broker
from jobs_service.client import JobsClient
from jobs_service.gateway import create_app
from jobs_service.infrastructure.repositories import runs
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

OPERATOR_KEY = "op-key-run-actions"
READER_KEY = "read-key-run-actions"
ACTOR_KEY = "act-key-run-actions"
UNKNOWN_RUN = "0" * 32


def _keys() -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "sha256": hashlib.sha256(key.encode()).hexdigest(),
            "scopes": scopes,
        }
        for name, key, scopes in (
            ("operator", OPERATOR_KEY, ["read", "operate"]),
            ("reader", READER_KEY, ["read"]),
            ("actor", ACTOR_KEY, ["operate"]),
        )
    ]


def _auth(key: str = OPERATOR_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        api_keys=_keys(), worker={"retry_backoff_s": 0.05, "retry_backoff_max_s": 1.0}
    )


async def _run(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/runs/{run_id}", headers=_auth())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _settled(app: Any, client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """The run once nothing runs in-process and the recorder has written everything."""
    await broker.wait_all()  # type: ignore[attr-defined]
    await app.state.runtime.recorder.wait_flushed()
    return await _run(client, run_id)


async def _until(
    client: httpx.AsyncClient, run_id: str, statuses: tuple[str, ...], within_s: float = 10
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        body = await _run(client, run_id)
        if body["status"] in statuses or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.02)


async def test_a_running_task_is_cancelled_promptly_and_recorded_cancelled(
    make_settings: Callable[..., Settings],
) -> None:
    """A 30 s task, cancelled while it sleeps, stops at once: the run and its attempt
    say cancelled by the operator's key, and the run is not retried."""
    app = create_app(_settings(make_settings), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        submitted = await client.post(
            "/v1/tasks/sleep_for", json={"kwargs": {"seconds": 30}}, headers=_auth()
        )
        run_id = submitted.json()["run_id"]
        assert (await _until(client, run_id, ("running",)))["status"] == "running"
        started = time.monotonic()
        cancelled = await client.post(f"/v1/runs/{run_id}/cancel", headers=_auth())
        final = await _settled(app, client, run_id)
        stopped_within = time.monotonic() - started
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert stopped_within < 2
    assert final["status"] == "cancelled"
    assert final["error"] == {"type": "Cancelled", "message": "cancelled by operator"}
    [attempt] = final["attempts"]
    assert attempt["attempt"] == 1
    assert attempt["status"] == "cancelled"
    assert attempt["worker"]  # completed by the worker that ran it
    assert attempt["started_at"] is not None
    assert attempt["duration_ms"] < 2000


async def test_a_queued_run_that_is_cancelled_never_starts(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run cancelled before its message is delivered: when the message arrives the
    task's code is never called, the message is consumed, and the record stays as the
    cancel wrote it (one attempt that never started)."""
    calls: list[dict[str, Any]] = []
    task = broker.find_task("count_items")
    assert task is not None

    async def spy(**kwargs: Any) -> dict[str, int]:
        calls.append(kwargs)
        return {"errors": 0}

    app = create_app(_settings(make_settings), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        jobs = app.state.client
        request = jobs.prepare("count_items", {"items": ["a"]})
        async with app.state.runtime.database.engine.begin() as connection:
            await runs.insert_queued_runs(connection, [request.queued_row()])
        cancelled = await client.post(f"/v1/runs/{request.run_id}/cancel", headers=_auth())
        monkeypatch.setattr(task, "original_func", spy)
        await jobs.send([request])  # the message arrives after the cancel
        assert isinstance(broker, InMemoryBroker)
        await broker.wait_all()  # the message has been taken and handled
        final = await _settled(app, client, request.run_id)
    assert cancelled.status_code == 202, cancelled.text
    assert calls == []
    assert final["status"] == "cancelled"
    assert final["attempt"] == 1
    assert final["started_at"] is None
    assert final["attempts"] == [
        {
            "attempt": 1,
            "status": "cancelled",
            "worker": None,
            "started_at": None,
            "finished_at": final["finished_at"],
            "duration_ms": None,
            "error": {"type": "Cancelled", "message": "cancelled by operator"},
        }
    ]


async def test_a_dead_run_is_retried_as_its_next_attempt_with_every_attempt_listed(
    make_settings: Callable[..., Settings],
) -> None:
    """Poison task: three attempts, dead; POST /retry queues attempt 4 of the same run,
    with its own source, and the run lists all four attempts."""
    app = create_app(_settings(make_settings), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        submitted = await client.post(
            "/v1/tasks/fail_until_attempt", json={"kwargs": {"succeed_at": 99}}, headers=_auth()
        )
        run_id = submitted.json()["run_id"]
        dead = await _until(client, run_id, ("dead",))
        retried = await client.post(f"/v1/runs/{run_id}/retry", headers=_auth())
        final = await _until(client, run_id, ("dead",))
    assert dead["status"] == "dead"
    assert [a["status"] for a in dead["attempts"]] == ["retrying", "retrying", "dead"]
    assert retried.status_code == 202, retried.text
    assert retried.json()["run_id"] == run_id
    assert final["attempt"] == 4
    assert final["source"] == "api"
    assert [(a["attempt"], a["status"]) for a in final["attempts"]] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "dead"),
        (4, "dead"),
    ]
    assert all(a["error"]["type"] == "RetryLater" for a in final["attempts"])


async def test_a_retry_answers_with_the_run_as_it_queued_it_however_fast_a_worker_is(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer to POST /retry is the run queued by that retry, even when a worker has
    run (and ended) the new attempt before the send returned."""
    app = create_app(_settings(make_settings), broker=broker, embedded=True, scheduler=False)
    send = JobsClient.send

    async def send_then_let_it_run(self: JobsClient, *args: Any, **kwargs: Any) -> None:
        await send(self, *args, **kwargs)
        await broker.wait_all()  # type: ignore[attr-defined]
        await app.state.runtime.recorder.wait_flushed()

    async with serve_app(app) as client:
        submitted = await client.post(
            "/v1/tasks/fail_until_attempt", json={"kwargs": {"succeed_at": 99}}, headers=_auth()
        )
        run_id = submitted.json()["run_id"]
        await _until(client, run_id, ("dead",))
        await _settled(app, client, run_id)
        monkeypatch.setattr(JobsClient, "send", send_then_let_it_run)
        retried = await client.post(f"/v1/runs/{run_id}/retry", headers=_auth())
        monkeypatch.undo()
        final = await _settled(app, client, run_id)
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "queued"
    assert retried.json()["attempt"] == 3  # the attempt number moves when a worker starts it
    assert [a["attempt"] for a in retried.json()["attempts"]] == [1, 2, 3]
    assert final["status"] == "dead"
    assert final["attempt"] == 4


async def test_a_retry_after_a_cancel_runs_and_succeeds(
    make_settings: Callable[..., Settings],
) -> None:
    """Cancelled while running, then retried: attempt 2 runs to its end."""
    app = create_app(_settings(make_settings), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        submitted = await client.post(
            "/v1/tasks/sleep_for", json={"kwargs": {"seconds": 0.3}}, headers=_auth()
        )
        run_id = submitted.json()["run_id"]
        await _until(client, run_id, ("running",))
        await client.post(f"/v1/runs/{run_id}/cancel", headers=_auth())
        await _settled(app, client, run_id)
        retried = await client.post(f"/v1/runs/{run_id}/retry", headers=_auth())
        final = await _until(client, run_id, ("succeeded",))
    assert retried.status_code == 202
    assert final["status"] == "succeeded"
    assert final["error"] is None
    assert [(a["attempt"], a["status"]) for a in final["attempts"]] == [
        (1, "cancelled"),
        (2, "succeeded"),
    ]


async def test_a_run_cancelled_between_attempts_is_not_retried(
    make_settings: Callable[..., Settings],
) -> None:
    """Cancelled while it waits for its retry: the delayed attempt 2 never runs, and
    attempt 2 is listed as cancelled without having started."""
    settings = make_settings(worker={"retry_backoff_s": 0.4, "retry_backoff_max_s": 0.4})
    app = create_app(settings, broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        submitted = await client.post(
            "/v1/tasks/fail_until_attempt", json={"kwargs": {"succeed_at": 2}}
        )
        run_id = submitted.json()["run_id"]
        waiting = await _until(client, run_id, ("retrying",))
        cancelled = await client.post(f"/v1/runs/{run_id}/cancel")
        await asyncio.sleep(0.6)  # past the backoff: the retry message has arrived
        assert isinstance(broker, InMemoryBroker)
        await broker.wait_all()  # and has been handled: refused, as the attempts show
        final = await _settled(app, client, run_id)
    assert waiting["status"] == "retrying"
    assert cancelled.status_code == 202
    assert final["status"] == "cancelled"
    assert (final["attempt"], final["started_at"], final["worker"]) == (2, None, None)
    assert final["error"] == {"type": "Cancelled", "message": "cancelled by local"}
    assert [(a["attempt"], a["status"], a["started_at"] is None) for a in final["attempts"]] == [
        (1, "retrying", False),
        (2, "cancelled", True),
    ]


async def test_finished_unknown_and_unauthorised_actions_are_problems(
    make_settings: Callable[..., Settings],
) -> None:
    """Cancel of a finished run and retry of a succeeded one: 409; unknown run: 404;
    a read-only key: 403 — all problem+json."""
    app = create_app(_settings(make_settings), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        submitted = await client.post(
            "/v1/tasks/count_items", json={"kwargs": {"items": []}}, headers=_auth()
        )
        run_id = submitted.json()["run_id"]
        await _until(client, run_id, ("succeeded",))
        cancel_finished = await client.post(f"/v1/runs/{run_id}/cancel", headers=_auth())
        retry_succeeded = await client.post(f"/v1/runs/{run_id}/retry", headers=_auth())
        unknown = [
            await client.post(f"/v1/runs/{target}/{action}", headers=_auth())
            for target in (UNKNOWN_RUN, "999999", "not-a-run")
            for action in ("cancel", "retry")
        ]
        reader = await client.post(f"/v1/runs/{run_id}/retry", headers=_auth(READER_KEY))
    assert cancel_finished.status_code == 409
    assert cancel_finished.headers["content-type"] == "application/problem+json"
    assert cancel_finished.json()["type"] == "urn:jobs-service:problem:run-not-cancellable"
    assert cancel_finished.json()["run_status"] == "succeeded"
    assert retry_succeeded.status_code == 409
    assert retry_succeeded.json()["type"] == "urn:jobs-service:problem:run-not-retryable"
    assert [r.status_code for r in unknown] == [404] * 6
    assert all(r.json()["type"] == "urn:jobs-service:problem:unknown-run" for r in unknown)
    assert reader.status_code == 403


async def test_a_key_without_read_learns_only_what_its_retry_or_cancel_did(
    make_settings: Callable[..., Settings],
) -> None:
    """An operate-only key may retry and cancel, but cannot GET the run: its answers
    hold the run id, status and attempt, never the run's kwargs, error, attempts or
    deliveries (a key with read gets the run as GET shows it)."""
    app = create_app(_settings(make_settings), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        submitted = await client.post(
            "/v1/tasks/fail_until_attempt", json={"kwargs": {"succeed_at": 99}}, headers=_auth()
        )
        run_id = submitted.json()["run_id"]
        await _until(client, run_id, ("dead",))
        await _settled(app, client, run_id)
        refused = await client.get(f"/v1/runs/{run_id}", headers=_auth(ACTOR_KEY))
        retried = await client.post(f"/v1/runs/{run_id}/retry", headers=_auth(ACTOR_KEY))
        await _until(client, run_id, ("dead",))
        as_operator = await client.post(f"/v1/runs/{run_id}/retry", headers=_auth())
        await _until(client, run_id, ("dead",))
        queued = app.state.client.prepare("count_items", {"items": ["secret"]})
        async with app.state.runtime.database.engine.begin() as connection:
            await runs.insert_queued_runs(connection, [queued.queued_row()])
        cancelled = await client.post(f"/v1/runs/{queued.run_id}/cancel", headers=_auth(ACTOR_KEY))
    assert refused.status_code == 403
    assert retried.status_code == 202, retried.text
    assert retried.json() == {"run_id": run_id, "status": "queued", "attempt": 3}
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json() == {"run_id": queued.run_id, "status": "cancelled", "attempt": 1}
    assert as_operator.status_code == 202, as_operator.text
    assert as_operator.json()["kwargs"] == {"succeed_at": 99}
    assert [a["status"] for a in as_operator.json()["attempts"]] == ["retrying"] * 2 + ["dead"] * 2
