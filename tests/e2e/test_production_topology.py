"""Gateway, worker and PostgreSQL/Redis as separate processes, as in production."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from jobs_service.infrastructure.migrate import head_revision
from tests.support.processes import free_port, jobsctl, started, wait_for_http
from tests.support.services import redis_url

if TYPE_CHECKING:
    from pathlib import Path

OPERATOR = "e2e-operator-key"
READER = "e2e-reader-key"


def _config(tmp_path: Path) -> Path:
    digest = {key: hashlib.sha256(key.encode()).hexdigest() for key in (OPERATOR, READER)}
    path = tmp_path / "jobs.toml"
    path.write_text(
        f'[[api_keys]]\nname = "operator"\nsha256 = "{digest[OPERATOR]}"\n'
        'scopes = ["read", "operate"]\n\n'
        f'[[api_keys]]\nname = "reader"\nsha256 = "{digest[READER]}"\nscopes = ["read"]\n'
    )
    return path


@pytest.fixture
def env(tmp_path: Path, pg_url: str, redis_prefix: str) -> dict[str, str]:
    """Environment of every process: the session's database, a fresh key prefix."""
    return {
        "JOBS_DATABASE_URL": pg_url,
        "JOBS_REDIS_URL": redis_url(),
        "JOBS_REDIS_PREFIX": f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
        "JOBS_CONFIG_FILE": str(_config(tmp_path)),
        "JOBS_TASK_MODULES": "tests.support.sample_tasks",
        "JOBS_ENV": "production",
    }


def _wait_run(api: str, run_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{api}/v1/runs/{run_id}", headers=_auth(READER), timeout=5).json()
        if body.get("status") in ("succeeded", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish: {body}")


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _json_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.mark.parametrize("worker_command", ["jobsctl", "taskiq"])
def test_api_submits_and_a_separate_worker_runs(
    env: dict[str, str],
    tmp_path: Path,
    worker_command: str,
) -> None:
    """Submitted through the API, run by `jobsctl worker` or plain `taskiq worker`,
    recorded in PostgreSQL: succeeded with its summary, or failed with its error."""
    migrated = jobsctl("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert f"revision {head_revision()}" in migrated.stdout

    port = free_port()
    api = f"http://127.0.0.1:{port}"
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    worker_args = ("worker", "--processes", "1", "--concurrency", "10")
    command = None
    if worker_command == "taskiq":
        import sys  # noqa: PLC0415

        command = [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            "jobs_service.broker:broker",
            "--workers",
            "1",
        ]
    with (
        started(
            "api", "--host", "127.0.0.1", "--port", str(port), env=env, log=api_log
        ) as api_process,
        started(*worker_args, env=env, log=worker_log, command=command) as worker_process,
    ):
        wait_for_http(f"{api}/ready", process=api_process, log=api_log)

        healthy = httpx.post(
            f"{api}/v1/tasks/check_system_health",
            json={"kwargs": {}},
            headers=_auth(OPERATOR),
            timeout=5,
        )
        assert healthy.status_code == 202, healthy.text
        counted = httpx.post(
            f"{api}/v1/tasks/count_items",
            json={"kwargs": {"items": ["a", "b", "bad"], "fail_on": "bad"}},
            headers=_auth(OPERATOR),
            timeout=5,
        )
        failing = httpx.post(
            f"{api}/v1/tasks/fail_on_purpose",
            json={"kwargs": {"reason": "e2e failure"}},
            headers=_auth(OPERATOR),
            timeout=5,
        )
        denied = httpx.post(
            f"{api}/v1/tasks/count_items",
            json={"kwargs": {"items": []}},
            headers=_auth(READER),
            timeout=5,
        )

        health_run = _wait_run(api, healthy.json()["run_id"])
        count_run = _wait_run(api, counted.json()["run_id"])
        failed_run = _wait_run(api, failing.json()["run_id"])
        assert worker_process.poll() is None, worker_log.read_text()

    assert denied.status_code == 403
    assert health_run["status"] == "succeeded"
    assert health_run["summary"] == {"checked": 2, "healthy": 2, "stuck_runs": 0, "errors": 0}
    assert count_run["summary"] == {"processed": 2, "errors": 1}
    assert failed_run["status"] == "failed"
    assert failed_run["error"] == {"type": "RuntimeError", "message": "e2e failure"}
    # Ran in the worker process, not the gateway.
    assert (
        health_run["worker"].endswith(f":{worker_process.pid}")
        or health_run["worker"] != f"{api_process.pid}"
    )
    events = _json_lines(worker_log)
    failed_lines = [e for e in events if e.get("event") == "job-failed"]
    assert [e["run_id"] for e in failed_lines] == [failed_run["run_id"]]
    assert failed_lines[0]["error_type"] == "RuntimeError"
    success = [e for e in events if e.get("event") == "job-success"]
    assert {e["run_id"] for e in success} == {health_run["run_id"], count_run["run_id"]}
    assert all(isinstance(e.get("duration_ms"), int) for e in success)
    requests = [e for e in _json_lines(api_log) if e.get("event") == "http-request"]
    assert any(e.get("principal") == "operator" for e in requests)
    assert OPERATOR not in api_log.read_text()


def test_cli_enqueue_wait_against_a_worker(env: dict[str, str], tmp_path: Path) -> None:
    """`jobsctl enqueue --wait` queues through Redis and prints the worker's summary."""
    assert jobsctl("migrate", env=env).returncode == 0
    log = tmp_path / "worker.log"
    with started("worker", env=env, log=log):
        done = jobsctl(
            "enqueue",
            "count_items",
            "--kwargs",
            '{"items": ["x", "y"]}',
            "--wait",
            "--timeout",
            "30",
            env=env,
        )
    assert done.returncode == 0, done.stderr + log.read_text()
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    assert result["summary"] == {"processed": 2, "errors": 0}
    failed = jobsctl("enqueue", "fail_on_purpose", "--wait", "--timeout", "1", env=env)
    # No worker any more: the run stays queued and --wait gives up with exit 1.
    assert failed.returncode == 1
    assert "did not finish" in failed.stderr


def test_api_refuses_to_start_in_production_without_keys(env: dict[str, str]) -> None:
    """JOBS_ENV=production and no [[api_keys]]: one line, exit 2."""
    env = {**env, "JOBS_CONFIG_FILE": ""}
    result = jobsctl("api", "--port", str(free_port()), env=env, timeout=30)
    assert result.returncode == 2
    assert "requires at least one [[api_keys]]" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
