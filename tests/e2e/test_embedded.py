"""`jobsctl run`: the newcomer's one-process service."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import httpx

from tests.support.processes import free_port, jobsctl, started, wait_for_http

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

ENV = {"JOBS_TASK_MODULES": "tests.support.sample_tasks"}


@contextlib.contextmanager
def embedded_service(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`jobsctl run` in ``tmp_path`` with no configuration; yields its URL and log."""
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    log = tmp_path / "run.log"
    with started("run", "--port", str(port), env=ENV, log=log, cwd=tmp_path) as process:
        wait_for_http(f"{api}/health", process=process, log=log)
        yield api, log


def test_jobsctl_run_serves_and_runs_check_system_health(tmp_path: Path) -> None:
    """No configuration: SQLite under ./var, tasks run in-process, history kept."""
    with embedded_service(tmp_path) as (api, log):
        submitted = httpx.post(
            f"{api}/v1/tasks/check_system_health", json={"kwargs": {}}, timeout=5
        )
        assert submitted.status_code == 202
        run_id = submitted.json()["run_id"]
        run: dict[str, object] = {}
        for _ in range(100):
            run = httpx.get(f"{api}/v1/runs/{run_id}", timeout=5).json()
            if run["status"] == "succeeded":
                break
            time.sleep(0.05)
    assert run["status"] == "succeeded", run
    assert run["summary"] == {"checked": 2, "healthy": 2, "stuck_runs": 0, "errors": 0}
    assert (tmp_path / "var" / "jobs.db").is_file()
    banner = log.read_text()
    assert f"{api}/docs" in banner
    assert str(tmp_path / "var" / "jobs.db") in banner
    # The history outlives the process: the CLI reads it from the same file.
    listed = jobsctl("runs", "--json", env=ENV, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout


def test_jobsctl_run_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    """Binding 0.0.0.0 with no API keys is a one-line error."""
    result = jobsctl(
        "run",
        "--host",
        "0.0.0.0",  # noqa: S104 - the address under test, refused
        "--port",
        str(free_port()),
        env={},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr


def test_a_schedule_created_through_the_api_fires_in_jobsctl_run(tmp_path: Path) -> None:
    """The embedded process includes the scheduler: an every-second schedule runs."""
    with embedded_service(tmp_path) as (api, _):
        created = httpx.post(
            f"{api}/v1/schedules",
            timeout=5,
            json={
                "name": "tick",
                "task": "count_items",
                "kwargs": {"items": ["x"]},
                "schedule": {"type": "interval", "seconds": 1},
            },
        )
        assert created.status_code == 201, created.text
        schedule_id = created.json()["id"]
        runs: list[dict[str, object]] = []
        for _ in range(60):
            runs = httpx.get(f"{api}/v1/runs?schedule_id={schedule_id}", timeout=5).json()["items"]
            if sum(run["status"] == "succeeded" for run in runs) >= 2:
                break
            time.sleep(0.1)
        labels = httpx.get(f"{api}/v1/schedules?source=label", timeout=5).json()["items"]
    assert sum(run["status"] == "succeeded" for run in runs) >= 2
    assert {run["source"] for run in runs} == {"schedule"}
    assert {s["name"] for s in labels} >= {"check_system_health", "cleanup_old_runs"}
