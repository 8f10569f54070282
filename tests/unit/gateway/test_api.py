"""The gateway on the embedded default, in-process: submit, inspect, and bad input."""

from __future__ import annotations

import asyncio
import hashlib
import json
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
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
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
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
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


async def test_counts_named_like_log_fields_are_recorded(
    make_settings: Callable[..., Settings],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Counts called attempt/event/task do not clash with the lifecycle log line."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        response = await client.post("/v1/tasks/count_awkwardly", json={})
        run = await wait_finished(client, response.json()["run_id"])
    assert run["status"] == "succeeded"
    assert run["summary"] == {"attempt": 3, "event": 1, "duration_ms": 5, "task": 2, "errors": 0}
    success = [
        line for line in capfd.readouterr().err.splitlines() if '"event":"job-success"' in line
    ]
    assert len(success) == 1
    assert '"summary":{"attempt":3' in success[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"items": ["a\u0000b"]}, "NUL"),
        ({"items": [], "fail_on": "\ud800"}, "surrogate"),
    ],
)
async def test_values_the_wire_or_database_would_mangle_are_422(
    make_settings: Callable[..., Settings],
    kwargs: dict[str, Any],
    message: str,
) -> None:
    """NUL characters and lone surrogates are refused at submit time."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        body = json.dumps({"kwargs": kwargs}, ensure_ascii=True).replace("\\\\", "\\")
        response = await client.post(
            "/v1/tasks/count_items", content=body, headers={"content-type": "application/json"}
        )
        runs = (await client.get("/v1/runs")).json()["items"]
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert runs == []


async def test_a_result_that_is_not_a_summary_fails_the_run(
    make_settings: Callable[..., Settings],
) -> None:
    """The summary contract is enforced at run time too."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
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
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
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
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        response = await client.post(
            "/v1/tasks/count_items",
            content=b'{"kwargs": ',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()["type"].endswith("malformed-json")


async def test_a_json_body_that_is_not_utf8_is_malformed_json(
    make_settings: Callable[..., Settings],
) -> None:
    """A body sent as JSON whose bytes are not UTF-8 is not JSON either: 400
    ``malformed-json`` like any unparsable body, nothing queued; without a valid key it
    is still a 401 (the body's fault is not told to an unauthenticated caller)."""
    app = create_app(make_settings(api_keys=keys()), broker=broker, embedded=True, scheduler=False)
    body = b'{"kwargs": {"items": ["\xff"]}}'
    json_type = {"content-type": "application/json"}
    async with serve_app(app) as client:
        response = await client.post(
            "/v1/tasks/count_items", content=body, headers={**json_type, **auth(OPERATOR_KEY)}
        )
        anonymous = await client.post("/v1/tasks/count_items", content=body, headers=json_type)
        runs = (await client.get("/v1/runs", headers=auth(READER_KEY))).json()["items"]
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:jobs-service:problem:malformed-json"
    assert "UTF-8" in response.json()["detail"]
    assert anonymous.status_code == 401
    assert runs == []


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
    app = create_app(make_settings(api_keys=keys()), broker=broker, embedded=True, scheduler=False)
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
    app = create_app(make_settings(api_keys=keys()), broker=broker, embedded=True, scheduler=False)
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
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
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
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
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
        # The default spelled out is the same request (it used to be a 422).
        explicit = await client.post(
            "/v1/tasks/count_items",
            json={"kwargs": {"items": ["a"], "fail_on": None}},
            headers={"Idempotency-Key": "order-42"},
        )
        runs = (await client.get("/v1/runs?task=count_items")).json()["items"]
    assert first.status_code == second.status_code == 202
    assert first.json()["run_id"] == second.json()["run_id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert other.status_code == 422
    assert other.json()["type"].endswith("idempotency-key-reused")
    assert explicit.status_code == 202, explicit.text
    assert explicit.json()["run_id"] == first.json()["run_id"]
    assert len(runs) == 1
    assert runs[0]["idempotency_key"] == "order-42"


async def test_batch_submit(make_settings: Callable[..., Settings]) -> None:
    """A batch queues one run per item, in order; one bad item rejects all."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
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
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
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
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
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
    app = create_app(make_settings(api_keys=keys()), broker=broker, embedded=True, scheduler=False)
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


def _cursor(raw: str) -> str:
    import base64  # noqa: PLC0415

    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", f"/v1/runs?cursor={_cursor('c1:²')}", 400),
        ("GET", f"/v1/runs?cursor={_cursor('c1:' + '9' * 30)}", 400),
        ("GET", "/v1/runs/%C2%B2", 404),
        ("GET", f"/v1/runs?schedule_id={2**70}", 422),
        ("GET", "/v1/runs?queued_after=0001-01-01T00:00:00%2B05:00", 422),
        ("GET", "/v1/runs?queued_before=9999-12-31T23:59:59-05:00", 422),
        ("GET", "/v1/runs?task=a%00b", 422),
        ("GET", f"/v1/schedules/{2**70}", 422),
        ("GET", "/v1/tasks?limit=0", 422),
    ],
)
async def test_hostile_inputs_are_client_errors_not_500(
    make_settings: Callable[..., Settings],
    method: str,
    path: str,
    status: int,
) -> None:
    """Odd digits, overflowing numbers and dates, control characters: 4xx problems."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        response = await client.request(method, path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_oversized_integers_and_blank_keys_are_refused(
    make_settings: Callable[..., Settings],
) -> None:
    """A 70-bit integer kwarg and a blank Idempotency-Key are 422s; nothing is queued."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        big = await client.post(
            "/v1/tasks/cleanup_old_runs", json={"kwargs": {"retention_days": 2**70}}
        )
        zero = await client.post(
            "/v1/tasks/cleanup_old_runs", json={"kwargs": {"retention_days": 0}}
        )
        blank = await client.post(
            "/v1/tasks/count_items",
            json={"kwargs": {"items": []}},
            headers={"Idempotency-Key": " "},
        )
        runs = (await client.get("/v1/runs")).json()["items"]
    assert big.status_code == 422
    assert "64-bit" in big.json()["detail"]
    assert zero.status_code == 422
    assert blank.status_code == 422
    assert runs == []


async def test_an_unexpected_error_is_a_500_problem_with_the_request_id(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A bug surfaces as one problem+json 500 carrying the request id, logged once."""
    from jobs_service.infrastructure.repositories import runs as runs_repo  # noqa: PLC0415

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(runs_repo, "list_runs", broken)
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        response = await client.get("/v1/runs", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["request_id"] == "req-500"
    assert response.headers["x-request-id"] == "req-500"
    assert "simulated bug" not in response.text
    errors = [line for line in capfd.readouterr().err.splitlines() if '"unhandled-error"' in line]
    assert len(errors) == 1
    assert '"request_id":"req-500"' in errors[0]


async def test_task_list_pages(make_settings: Callable[..., Settings]) -> None:
    """GET /v1/tasks pages by name with the list contract."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        first = (await client.get("/v1/tasks?limit=2")).json()
        rest = (await client.get(f"/v1/tasks?limit=500&cursor={first['next_cursor']}")).json()
    names = [task["name"] for task in first["items"] + rest["items"]]
    assert len(first["items"]) == 2
    assert names == sorted(names)
    assert rest["next_cursor"] is None
    assert {"check_system_health", "cleanup_old_runs", "count_items"} <= set(names)


async def test_an_idempotent_repeat_tells_true_from_one(
    make_settings: Callable[..., Settings],
) -> None:
    """``true`` and ``1`` are equal in Python: a repeat with the other one replayed a
    run that had run with different arguments."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        responses = [
            await client.post(
                "/v1/tasks/run_agent_task",
                json={"kwargs": {"agent": "kpis", "payload": {"x": value}}},
                headers={"Idempotency-Key": "flag-7"},
            )
            for value in (1, True)
        ]
    assert responses[0].status_code == 202, responses[0].text
    assert responses[1].status_code == 422
    assert responses[1].json()["type"].endswith("idempotency-key-reused")
