"""Retry and cancel in the production topology: `jobsctl api`, `jobsctl worker` and the
`jobsctl runs` commands as separate processes on PostgreSQL and Redis."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis

from tests.support.processes import free_port, jobsctl, started, wait_for_http
from tests.support.services import redis_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

OPERATOR = "e2e-cancel-operator-key"
BACKOFF_S = 2.0
IDLE_TIMEOUT_S = 2.0


@pytest.fixture
def env(tmp_path: Path, pg_url: str, redis_prefix: str) -> dict[str, str]:
    """Every process's environment; an unacknowledged message would be handed to a
    worker again within a few seconds, so a test can see that it is not."""
    digest = hashlib.sha256(OPERATOR.encode()).hexdigest()
    config = tmp_path / "jobs.toml"
    config.write_text(
        f'[[api_keys]]\nname = "operator"\nsha256 = "{digest}"\nscopes = ["read", "operate"]\n'
    )
    return {
        "JOBS_DATABASE_URL": pg_url,
        "JOBS_REDIS_URL": redis_url(),
        "JOBS_REDIS_PREFIX": f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
        "JOBS_CONFIG_FILE": str(config),
        "JOBS_TASK_MODULES": "tests.support.sample_tasks",
        "JOBS_ENV": "production",
        "JOBS_WORKER__RETRY_BACKOFF_S": str(BACKOFF_S),
        "JOBS_WORKER__RETRY_BACKOFF_MAX_S": "60",
        "JOBS_BROKER__IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S),
        "JOBS_BROKER__RECLAIM_INTERVAL_S": "0.5",
    }


@pytest.fixture
def api(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A migrated database and a running gateway; yields its base URL."""
    migrated = jobsctl("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    log = tmp_path / "api.log"
    with started("api", "--host", "127.0.0.1", "--port", str(port), env=env, log=log) as process:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/ready", process=process, log=log)
        yield base


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {OPERATOR}"}


def _submit(api: str, task: str, kwargs: dict[str, Any]) -> str:
    response = httpx.post(
        f"{api}/v1/tasks/{task}", json={"kwargs": kwargs}, headers=_headers(), timeout=5
    )
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def _run(api: str, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{api}/v1/runs/{run_id}", headers=_headers(), timeout=5)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _wait(
    api: str, run_id: str, done: Callable[[dict[str, Any]], bool], within_s: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    body = _run(api, run_id)
    while not done(body):
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} did not get there: {body}")
        time.sleep(0.05)
        body = _run(api, run_id)
    return body


def _status(*statuses: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body["status"] in statuses


def _json_lines(log: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith("{")
    ]


def _at(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _pending(env: dict[str, str]) -> int:
    """Messages some worker read and has not acknowledged."""
    client = redis.Redis.from_url(env["JOBS_REDIS_URL"])
    try:
        prefix = env["JOBS_REDIS_PREFIX"]
        summary: Any = client.xpending(f"{prefix}:tasks", f"{prefix}:workers")
        return int(summary["pending"])
    finally:
        client.close()


def test_a_poison_run_dies_after_growing_delays_and_a_retry_runs_it_again(
    env: dict[str, str], api: str, tmp_path: Path
) -> None:
    """Three attempts, each wait at least the jittered backoff and longer than the one
    before; dead; then POST /retry runs attempt 4 of the same run."""
    log = tmp_path / "worker.log"
    with started("worker", "--processes", "1", env=env, log=log):
        run_id = _submit(api, "fail_until_attempt", {"succeed_at": 99})
        dead = _wait(api, run_id, _status("dead"), within_s=40)
        retried = httpx.post(f"{api}/v1/runs/{run_id}/retry", headers=_headers(), timeout=5)
        again = _wait(api, run_id, lambda body: body["attempt"] == 4 and body["status"] == "dead")
        shown = jobsctl("runs", "show", run_id, env=env)

    attempts = dead["attempts"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "dead"),
    ]
    waits = [
        _at(later["started_at"]) - _at(earlier["finished_at"])
        for earlier, later in itertools.pairwise(attempts)
    ]
    delays = [
        line["retry_in_s"]
        for line in _json_lines(log)
        if line.get("event") == "job-retry" and line.get("run_id") == run_id
    ]
    assert len(delays) == 2
    # Full jitter: attempt n waits between half and all of BACKOFF_S * 2**(n-1).
    assert BACKOFF_S / 2 <= delays[0] <= BACKOFF_S <= delays[1] <= 2 * BACKOFF_S
    for waited, delay in zip(waits, delays, strict=True):
        assert delay - 0.05 <= waited <= delay + 1.5  # really delayed, then picked up
    assert waits[1] > waits[0]

    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "queued"
    assert [(a["attempt"], a["status"]) for a in again["attempts"]][-1] == (4, "dead")
    assert again["attempts"][3]["started_at"] is not None
    assert again["source"] == "api"
    assert shown.returncode == 0, shown.stderr
    assert [a["attempt"] for a in json.loads(shown.stdout)["attempts"]] == [1, 2, 3, 4]


def test_a_run_cancelled_while_queued_never_starts_even_on_a_worker_started_later(
    env: dict[str, str], api: str, tmp_path: Path
) -> None:
    """`jobsctl runs cancel` before any worker runs: the worker that starts afterwards
    refuses the message (the task raises RunCancelled instead of running), acknowledges
    it, and the record stays as the cancel wrote it."""
    run_id = _submit(api, "sleep_for", {"seconds": 20})
    cancelled = jobsctl("runs", "cancel", run_id, env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    shown = json.loads(cancelled.stdout)
    assert shown["status"] == "cancelled"
    assert shown["error"]["message"].startswith("cancelled by cli")

    log = tmp_path / "worker.log"
    with started("worker", "--processes", "1", env=env, log=log):
        marker = _submit(api, "count_items", {"items": ["x"]})  # queued behind it
        _wait(api, marker, _status("succeeded"))
        time.sleep(2 * IDLE_TIMEOUT_S)  # long enough for an unacknowledged copy to return
        final = _run(api, run_id)
        pending = _pending(env)

    assert pending == 0
    refused = [
        json.loads(line)
        for line in log.read_text().splitlines()
        if run_id in line and '"job-cancelled"' in line
    ]
    assert len(refused) == 1, log.read_text()[-2000:]  # refused, not run: no 20 s sleep
    assert refused[0]["error_type"] == "Cancelled"
    assert final["status"] == "cancelled"
    assert (final["attempt"], final["started_at"]) == (1, None)
    assert [(a["attempt"], a["worker"], a["started_at"]) for a in final["attempts"]] == [
        (1, None, None)
    ]


def test_a_running_run_is_cancelled_promptly_acknowledged_and_retryable(
    env: dict[str, str], api: str, tmp_path: Path
) -> None:
    """A 25 s task cancelled through the API stops within a couple of seconds, is
    recorded cancelled by the worker that ran it and not redelivered; `jobsctl runs
    retry` runs it again, and that attempt can be cancelled too. A finished run cannot
    be cancelled (409), an unknown one is 404."""
    log = tmp_path / "worker.log"
    with started("worker", "--processes", "1", env=env, log=log):
        run_id = _submit(api, "sleep_for", {"seconds": 25})
        _wait(api, run_id, _status("running"))
        asked = time.monotonic()
        cancelled = httpx.post(f"{api}/v1/runs/{run_id}/cancel", headers=_headers(), timeout=5)
        stopped = _wait(api, run_id, lambda body: body["attempts"][0]["worker"] is not None)
        stopped_after = time.monotonic() - asked
        time.sleep(2 * IDLE_TIMEOUT_S)  # an unacknowledged message would be back by now
        pending = _pending(env)
        settled = _run(api, run_id)

        finished = httpx.post(f"{api}/v1/runs/{run_id}/cancel", headers=_headers(), timeout=5)
        unknown = httpx.post(f"{api}/v1/runs/{'0' * 32}/cancel", headers=_headers(), timeout=5)

        retried = jobsctl("runs", "retry", run_id, env=env)
        assert retried.returncode == 0, retried.stderr
        _wait(api, run_id, lambda body: body["status"] == "running" and body["attempt"] == 2)
        again = httpx.post(f"{api}/v1/runs/{run_id}/cancel", headers=_headers(), timeout=5)
        twice = _wait(
            api, run_id, lambda body: len(body["attempts"]) == 2 and body["attempts"][1]["worker"]
        )

    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert stopped_after < 3
    [attempt] = stopped["attempts"]
    assert attempt["status"] == "cancelled"
    assert attempt["duration_ms"] < 5000
    assert attempt["error"] == {"type": "Cancelled", "message": "cancelled by operator"}
    assert pending == 0
    assert settled["status"] == "cancelled"
    assert len(settled["attempts"]) == 1
    starts = [
        line
        for line in _json_lines(log)
        if line.get("event") == "job-start" and line.get("run_id") == run_id
    ]
    assert [line["attempt"] for line in starts] == [1, 2]  # never redelivered

    assert finished.status_code == 409
    assert finished.headers["content-type"] == "application/problem+json"
    assert unknown.status_code == 404

    assert json.loads(retried.stdout)["status"] in ("queued", "running")
    assert again.status_code == 202, again.text
    assert [(a["attempt"], a["status"]) for a in twice["attempts"]] == [
        (1, "cancelled"),
        (2, "cancelled"),
    ]
    assert twice["status"] == "cancelled"
