"""Two scheduler replicas against one PostgreSQL and Redis: every fire runs once."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support.processes import free_port, jobsctl, started, wait_for_http
from tests.support.services import redis_url

if TYPE_CHECKING:
    from pathlib import Path

KEY = "e2e-scheduler-key"


@pytest.fixture
def env(tmp_path: Path, pg_url: str, redis_prefix: str) -> dict[str, str]:
    """One database (the session's) and a fresh key prefix for this test."""
    config = tmp_path / "jobs.toml"
    config.write_text(
        f'[[api_keys]]\nname = "ops"\nsha256 = '
        f'"{hashlib.sha256(KEY.encode()).hexdigest()}"\nscopes = ["admin"]\n'
    )
    return {
        "JOBS_DATABASE_URL": pg_url,
        "JOBS_REDIS_URL": redis_url(),
        "JOBS_REDIS_PREFIX": f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
        "JOBS_CONFIG_FILE": str(config),
        "JOBS_TASK_MODULES": "tests.support.sample_tasks",
    }


def _api(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, f"{url}{path}", headers={"Authorization": f"Bearer {KEY}"}, timeout=10, **kwargs
    )


def _runs(url: str, schedule_id: int) -> list[dict[str, Any]]:
    return _api(url, "GET", f"/v1/runs?schedule_id={schedule_id}&limit=500").json()["items"]


def _wait_for_line(log: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, f"{log.name} never logged {text}"
        time.sleep(0.1)


def test_two_replicas_fire_each_interval_and_cron_time_exactly_once(
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    """An every-second interval and a `* * * * *` cron under two replicas (jobsctl and
    plain taskiq): one run per fire time, within a second of it; when one replica stops
    (SIGTERM, twice: it shuts down once and exits 0), the other carries on; a pause reaches both."""
    assert jobsctl("migrate", env=env).returncode == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = {name: tmp_path / f"{name}.log" for name in ("api", "worker", "one", "two")}
    taskiq = [
        sys.executable,
        "-m",
        "taskiq",
        "scheduler",
        "jobs_service.scheduler:scheduler",
        "--skip-first-run",
    ]
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(started("api", "--port", str(port), env=env, log=logs["api"]))
        stack.enter_context(started("worker", env=env, log=logs["worker"]))
        stack.enter_context(started(env=env, log=logs["two"], command=taskiq))
        replica_one = contextlib.ExitStack()
        one = replica_one.enter_context(started("scheduler", env=env, log=logs["one"]))
        wait_for_http(f"{url}/ready", process=api, log=logs["api"])
        _wait_for_line(logs["one"], '"scheduler-started"')
        _wait_for_line(logs["two"], '"scheduler-started"')
        # Create both 0.8 s before a minute: the cron's first fire is due at the very next
        # tick, so a replica that has not seen the new schedule yet would fire it late.
        time.sleep((59.2 - time.time() % 60) % 60)
        interval = _api(
            url,
            "POST",
            "/v1/schedules",
            json={
                "name": "every-second",
                "task": "count_items",
                "kwargs": {"items": ["i"]},
                "schedule": {"type": "interval", "seconds": 1},
                "overlap": "allow",
            },
        ).json()
        minutely = _api(
            url,
            "POST",
            "/v1/schedules",
            json={
                "name": "every-minute",
                "task": "count_items",
                "kwargs": {"items": ["c"]},
                "schedule": {"type": "cron", "cron": "* * * * *"},
            },
        ).json()
        deadline = time.monotonic() + 75
        while time.monotonic() < deadline:
            if len(_runs(url, minutely["id"])) >= 1 and len(_runs(url, interval["id"])) >= 4:
                break
            time.sleep(0.5)
        os.kill(one.pid, signal.SIGTERM)  # twice (here and by close): still one clean stop
        replica_one.close()  # a fail-over: replica two must carry on alone
        stopped_cleanly = one.returncode == 0 and '"scheduler-stopped"' in logs["one"].read_text()
        before = len(_runs(url, interval["id"]))
        time.sleep(3)
        after_failover = len(_runs(url, interval["id"]))
        paused = _api(url, "PATCH", f"/v1/schedules/{interval['id']}", json={"enabled": False})
        time.sleep(2.5)  # the pause reaches the replica at its next tick
        settled = _runs(url, interval["id"])
        time.sleep(2)
        after_pause = _runs(url, interval["id"])
        cron_runs = _runs(url, minutely["id"])

    assert paused.status_code == 200
    assert stopped_cleanly, f"exit {one.returncode}: {logs['one'].read_text()[-2000:]}"
    assert after_failover >= before + 2, "replica two did not take over"
    for runs in (settled, cron_runs):
        fire_times = [run["scheduled_for"] for run in runs]
        assert len(fire_times) == len(set(fire_times)), "a fire time ran twice"
        assert {run["source"] for run in runs} == {"schedule"}
    assert len(settled) >= 6
    assert len(cron_runs) >= 1
    assert all(datetime.fromisoformat(r["scheduled_for"]).second == 0 for r in cron_runs)
    assert len(after_pause) == len(settled), "a paused schedule fired"
    fired = {
        name: [
            json.loads(line)
            for line in logs[name].read_text().splitlines()
            if line.startswith("{") and '"schedule-fired"' in line
        ]
        for name in ("one", "two")
    }
    all_fired = fired["one"] + fired["two"]
    assert len(all_fired) == len({line["run_id"] for line in all_fired})
    assert {line["run_id"] for line in all_fired} >= {r["run_id"] for r in cron_runs}
    assert len(fired["two"]) >= 2
    assert all('"scheduler-started"' in logs[name].read_text() for name in ("one", "two"))
    # Only this test's schedules: the replicas also fire the built-in label schedules
    # (and, on the session's database, other tests' schedules); a replica started a
    # moment after a minute catches up that minute's fire, seconds late by design.
    ours = {interval["id"], minutely["id"]}
    lateness = sorted(line["lateness_ms"] for line in all_fired if line["schedule_id"] in ours)
    print(
        f"fires={len(all_fired)} one={len(fired['one'])} two={len(fired['two'])} "
        f"lateness_ms p50={lateness[len(lateness) // 2]} max={lateness[-1]}"
    )
    assert lateness[-1] < 1000, f"a fire was enqueued {lateness[-1]} ms late"
    assert any(r["status"] == "succeeded" for r in settled), settled
