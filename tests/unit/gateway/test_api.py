"""The gateway on the embedded default, in-process: submit, inspect, and bad input."""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Any

import pytest

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

OPERATOR_KEY = "op-key-123"
READER_KEY = "read-key-456"


def keys() -> list[dict[str, Any]]:
    return [
        {
            "name": "operator",
            "sha256": hashlib.sha256(OPERATOR_KEY.encode()).hexdigest(),
            "scopes": ["read", "operate"],
        },
        {
            "name": "reader",
            "sha256": hashlib.sha256(READER_KEY.encode()).hexdigest(),
            "scopes": ["read"],
        },
    ]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def wait_finished(
    client: httpx.AsyncClient, run_id: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    for _ in range(200):
        body: dict[str, Any] = (await client.get(f"/v1/runs/{run_id}", headers=headers)).json()
        if body["status"] in ("succeeded", "failed"):
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} did not finish: {body}")


async def test_submitted_task_runs_and_records_its_summary(
    make_settings: Callable[..., Settings],
) -> None:
    """POST → 202 queued; the in-process run ends succeeded with the task's counts."""
    app = create_app(make_settings(), broker=broker, embedded=True)
    async with serve_app(app) as client:
        response = await client.post(
            "/v1/tasks/count_items", json={"kwargs": {"items": ["a", "b", "x"], "fail_on": "x"}}
        )
        assert response.status_code == 202
        body = response.json()
        assert body["status"] == "queued"
        assert response.headers["location"] == f"/v1/runs/{body['run_id']}"
        run = await wait_finished(client, body["run_id"])
    assert run["status"] == "succeeded"
    assert run["summary"] == {"processed": 2, "errors": 1}
    assert run["source"] == "api"
    assert run["attempt"] == 1
    assert run["kwargs"] == {"items": ["a", "b", "x"], "fail_on": "x"}
    assert run["duration_ms"] is not None
    assert run["started_at"] <= run["finished_at"]


async def test_failing_task_records_error_and_logs_job_failed(
    make_settings: Callable[..., Settings],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The error type and message are stored; the log has job-failed with the run id."""
    app = create_app(make_settings(), broker=broker, embedded=True)
    async with serve_app(app) as client:
        response = await client.post(
            "/v1/tasks/fail_on_purpose", json={"kwargs": {"reason": "disk on fire"}}
        )
        run = await wait_finished(client, response.json()["run_id"])
    assert run["status"] == "failed"
    assert run["error"] == {"type": "RuntimeError", "message": "disk on fire"}
    assert run["summary"] is None
    logs = capfd.readouterr().err
    failed = [line for line in logs.splitlines() if '"job-failed"' in line]
    assert failed, logs
    assert run["run_id"] in failed[0]
    assert '"error_type":"RuntimeError"' in failed[0]


async def test_a_result_that_is_not_a_summary_fails_the_run(
    make_settings: Callable[..., Settings],
) -> None:
    """The summary contract is enforced at run time too."""
    app = create_app(make_settings(), broker=broker, embedded=True)
    async with serve_app(app) as client:
        response = await client.post("/v1/tasks/return_garbage", json={})
        run = await wait_finished(client, response.json()["run_id"])
    assert run["status"] == "failed"
    assert run["error"]["type"] == "InvalidSummaryError"


@pytest.mark.parametrize(
    ("path", "payload", "status", "problem"),
    [
        ("/v1/tasks/no_such_task", {"kwargs": {}}, 404, "unknown-task"),
        ("/v1/tasks/count_items", {"kwargs": {"items": "not-a-list"}}, 422, "invalid-kwargs"),
        ("/v1/tasks/count_items", {"kwargs": {}}, 422, "invalid-kwargs"),
        ("/v1/tasks/count_items", {"kwargs": {"items": [], "surprise": 1}}, 422, "invalid-kwargs"),
        ("/v1/tasks/count_items", {"kwargs": [1, 2]}, 422, "invalid-request"),
        ("/v1/tasks/count_items", {"kwarg": {}}, 422, "invalid-request"),
    ],
)
async def test_bad_submissions_are_problems(
    make_settings: Callable[..., Settings],
    path: str,
    payload: object,
    status: int,
    problem: str,
) -> None:
    """Unknown task 404; bad kwargs or body 422, as problem+json; nothing is queued."""
    app = create_app(make_settings(), broker=broker, embedded=True)
    async with serve_app(app) as client:
        response = await client.post(path, json=payload)
        runs = (await client.get("/v1/runs")).json()["items"]
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"urn:jobs-service:problem:{problem}"
    assert body["status"] == status
    assert body["detail"]
    assert runs == []


async def test_malformed_json_is_400(make_settings: Callable[..., Settings]) -> None:
    """A body that is not JSON is a 400 problem."""
    app = create_app(make_settings(), broker=broker, embedded=True)
    async with serve_app(app) as client:
        response = await client.post(
            "/v1/tasks/count_items",
            content=b'{"kwargs": ',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()["type"].endswith("malformed-json")


@pytest.mark.parametrize(
    ("headers", "status", "problem"),
    [
        ({}, 401, "unauthenticated"),
        ({"Authorization": "Basic abc"}, 401, "unauthenticated"),
        (auth("wrong-key"), 401, "invalid-api-key"),
        (auth(READER_KEY), 403, "insufficient-scope"),
    ],
)
async def test_submit_needs_an_operate_key(
    make_settings: Callable[..., Settings],
    headers: dict[str, str],
    status: int,
    problem: str,
) -> None:
    """Missing/wrong key 401 with a Bearer challenge; a read-only key 403."""
    app = create_app(make_settings(api_keys=keys()), broker=broker, embedded=True)
    async with serve_app(app) as client:
        response = await client.post(
            "/v1/tasks/count_items", json={"kwargs": {"items": []}}, headers=headers
        )
        listed = await client.get("/v1/runs", headers=auth(OPERATOR_KEY))
    assert response.status_code == status
    assert response.json()["type"].endswith(problem)
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert listed.json()["items"] == []


async def test_keys_with_scopes(make_settings: Callable[..., Settings]) -> None:
    """The operator submits; the reader reads; both are named in the request log."""
    app = create_app(make_settings(api_keys=keys()), broker=broker, embedded=True)
    async with serve_app(app) as client:
        submitted = await client.post(
            "/v1/tasks/count_items", json={"kwargs": {"items": []}}, headers=auth(OPERATOR_KEY)
        )
        assert submitted.status_code == 202
        run = await wait_finished(client, submitted.json()["run_id"], auth(READER_KEY))
        tasks = await client.get("/v1/tasks", headers=auth(READER_KEY))
    assert run["status"] == "succeeded"
    assert tasks.status_code == 200
    names = {task["name"] for task in tasks.json()["items"]}
    assert {"check_system_health", "cleanup_old_runs"} <= names


async def test_without_keys_only_loopback_is_served(
    make_settings: Callable[..., Settings],
) -> None:
    """No keys configured: a non-loopback caller gets 403."""
    app = create_app(make_settings(), broker=broker, embedded=True)
    async with serve_app(app, client_host="10.20.30.40") as client:
        response = await client.get("/v1/runs")
        health = await client.get("/health")
    assert response.status_code == 403
    assert response.json()["type"].endswith("loopback-only")
    assert health.status_code == 200


async def test_production_without_keys_refuses_to_start(
    make_settings: Callable[..., Settings],
) -> None:
    """JOBS_ENV=production and no [[api_keys]]: the lifespan fails."""
    from jobs_service.core.errors import ConfigurationError  # noqa: PLC0415

    app = create_app(make_settings(env="production"), broker=broker)
    with pytest.raises(ConfigurationError, match="api_keys"):
        async with serve_app(app):
            pass


async def test_idempotency_key_returns_the_same_run(
    make_settings: Callable[..., Settings],
) -> None:
    """Same key and body: same run; same key, other kwargs: 422."""
    app = create_app(make_settings(), broker=broker, embedded=True)
    async with serve_app(app) as client:
        body = {"kwargs": {"items": ["a"]}}
        first = await client.post(
            "/v1/tasks/count_items", json=body, headers={"Idempotency-Key": "order-42"}
        )
        second = await client.post(
            "/v1/tasks/count_items", json=body, headers={"Idempotency-Key": "order-42"}
        )
        other = await client.post(
            "/v1/tasks/count_items",
            json={"kwargs": {"items": ["b"]}},
            headers={"Idempotency-Key": "order-42"},
        )
        runs = (await client.get("/v1/runs?task=count_items")).json()["items"]
    assert first.status_code == second.status_code == 202
    assert first.json()["run_id"] == second.json()["run_id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert other.status_code == 422
    assert other.json()["type"].endswith("idempotency-key-reused")
    assert len(runs) == 1
    assert runs[0]["idempotency_key"] == "order-42"


async def test_batch_submit(make_settings: Callable[..., Settings]) -> None:
    """A batch queues one run per item, in order; one bad item rejects all."""
    app = create_app(make_settings(), broker=broker, embedded=True)
    async with serve_app(app) as client:
        items = [{"kwargs": {"items": ["x"] * n}} for n in range(5)]
        response = await client.post("/v1/tasks/count_items/batch", json={"items": items})
        assert response.status_code == 202
        run_ids = response.json()["run_ids"]
        finished = [await wait_finished(client, run_id) for run_id in run_ids]
        bad = await client.post(
            "/v1/tasks/count_items/batch",
            json={"items": [{"kwargs": {"items": []}}, {"kwargs": {"items": 3}}]},
        )
        total = len((await client.get("/v1/runs?limit=500")).json()["items"])
    assert [run["summary"]["processed"] for run in finished] == [0, 1, 2, 3, 4]
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["loc"][:3] == ["items", 1, "kwargs"]
    assert total == 5


async def test_runs_are_listed_newest_first_with_cursor_pages(
    make_settings: Callable[..., Settings],
) -> None:
    """Pages of 2 walk every run exactly once; filters narrow the list."""
    app = create_app(make_settings(), broker=broker, embedded=True)
    async with serve_app(app) as client:
        ids = []
        for n in range(5):
            response = await client.post(
                "/v1/tasks/count_items", json={"kwargs": {"items": ["a"] * n}}
            )
            ids.append(response.json()["run_id"])
        await client.post("/v1/tasks/fail_on_purpose", json={})
        for run_id in ids:
            await wait_finished(client, run_id)
        seen: list[str] = []
        cursor = None
        while True:
            query = "/v1/runs?task=count_items&limit=2" + (f"&cursor={cursor}" if cursor else "")
            page = (await client.get(query)).json()
            seen += [item["run_id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        failed = (await client.get("/v1/runs?status=failed")).json()["items"]
        bad_cursor = await client.get("/v1/runs?cursor=garbage")
        bad_limit = await client.get("/v1/runs?limit=501")
        naive = await client.get("/v1/runs?queued_after=2026-01-01T00:00:00")
        newest = (await client.get("/v1/runs")).json()["items"][0]
        by_id = await client.get(f"/v1/runs/{newest['id']}")
        missing = await client.get("/v1/runs/" + "0" * 32)
    assert seen == list(reversed(ids))
    assert [run["task"] for run in failed] == ["fail_on_purpose"]
    assert bad_cursor.status_code == 400
    assert bad_limit.status_code == 422
    assert naive.status_code == 422
    assert by_id.status_code == 200
    assert missing.status_code == 404


async def test_health_ready_and_metrics(make_settings: Callable[..., Settings]) -> None:
    """/health and /ready answer 200 on a working embedded service; /metrics is text."""
    app = create_app(make_settings(), broker=broker, embedded=True)
    async with serve_app(app) as client:
        health = await client.get("/health")
        ready = await client.get("/ready")
        metrics = await client.get("/metrics")
        unknown = await client.get("/v1/nothing-here")
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"]["ok"] is True
    assert metrics.headers["content-type"].startswith("text/plain")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"


async def test_request_log_redacts_sensitive_headers(
    make_settings: Callable[..., Settings],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """One http-request line per request, with a request id and no secret values."""
    app = create_app(make_settings(api_keys=keys()), broker=broker, embedded=True)
    async with serve_app(app) as client:
        response = await client.get(
            "/v1/runs",
            headers={**auth(READER_KEY), "X-Request-ID": "req-1", "X-Webhook-Signature": "sig-xyz"},
        )
    logs = capfd.readouterr().err
    lines = [line for line in logs.splitlines() if '"http-request"' in line]
    assert response.headers["x-request-id"] == "req-1"
    assert len(lines) == 1
    assert '"request_id":"req-1"' in lines[0]
    assert '"principal":"reader"' in lines[0]
    assert READER_KEY not in logs
    assert "sig-xyz" not in logs
