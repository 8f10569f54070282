"""Run progress followed live: a real task reports progress and a client follows
`GET /v1/runs/{run_id}/events`, in both topologies — `jobsctl api` + `jobsctl worker`
processes on PostgreSQL and Redis, and the one-process `jobsctl run`."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from tests.support.processes import free_port, jobsctl, started, wait_for_http
from tests.support.services import redis_url

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

#: Short intervals so a five-step run shows every step and a few heartbeats.
FAST = {
    "JOBS_TASK_MODULES": "tests.support.sample_tasks",
    "JOBS_API__EVENTS_POLL_INTERVAL_MS": "100",
    "JOBS_API__EVENTS_HEARTBEAT_S": "0.3",
    "JOBS_RUNS__PROGRESS_FLUSH_INTERVAL_MS": "100",
}
STEPS = {"steps": 5, "pause_s": 0.5, "hold_s": 1.0}


@contextlib.contextmanager
def production(tmp_path: Path, database_url: str, prefix: str) -> Iterator[str]:
    """A migrated database, `jobsctl api` and one `jobsctl worker`; yields the API URL."""
    env = {
        **FAST,
        "JOBS_DATABASE_URL": database_url,
        "JOBS_REDIS_URL": redis_url(),
        "JOBS_REDIS_PREFIX": f"{prefix}-{uuid.uuid4().hex[:6]}",
    }
    migrated = jobsctl("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    with (
        started("api", "--port", str(port), env=env, log=api_log) as api,
        started("worker", "--processes", "1", env=env, log=worker_log),
    ):
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/ready", process=api, log=api_log)
        yield base


@contextlib.contextmanager
def embedded(tmp_path: Path) -> Iterator[str]:
    """`jobsctl run` with no database or broker configured; yields its URL."""
    port = free_port()
    log = tmp_path / "run.log"
    with started("run", "--port", str(port), env=FAST, log=log, cwd=tmp_path) as process:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/health", process=process, log=log)
        yield base


def follow(api: str, task: str, kwargs: dict[str, Any]) -> tuple[str, list[dict[str, Any]], int]:
    """Submit a run and read its event stream to the end: the run id, the events (data
    decoded) and how many heartbeat comments came."""
    submitted = httpx.post(f"{api}/v1/tasks/{task}", json={"kwargs": kwargs}, timeout=5)
    assert submitted.status_code == 202, submitted.text
    run_id: str = submitted.json()["run_id"]
    events: list[dict[str, Any]] = []
    heartbeats = 0
    fields: dict[str, Any] = {}
    with httpx.stream("GET", f"{api}/v1/runs/{run_id}/events", timeout=30) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                heartbeats += 1
            elif line == "":
                if "event" in fields:
                    events.append(fields)
                fields = {}
            else:
                name, _, value = line.partition(": ")
                fields[name] = orjson.loads(value) if name == "data" else value
    return run_id, events, heartbeats


def _check(api: str, run_id: str, events: list[dict[str, Any]], heartbeats: int) -> None:
    progress = [event["data"] for event in events if event["event"] == "progress"]
    percents = [item["percent"] for item in progress]
    assert percents == sorted(set(percents)), events  # each change once, in order
    assert len(percents) >= 3, events  # 0.5 s apart: (nearly) every step is seen
    assert percents[-1] == 100
    assert progress[-1]["message"] == "step 5 of 5"
    statuses = [event["data"]["status"] for event in events if event["event"] == "status"]
    assert "running" in statuses, events
    final = events[-1]
    assert (final["event"], final["id"], final["data"]["status"]) == ("status", "end", "succeeded")
    assert final["data"]["summary"] == {"processed": 5, "errors": 0}
    assert heartbeats >= 1  # the 1 s hold after the last step is silent but for them
    shown = httpx.get(f"{api}/v1/runs/{run_id}", timeout=5).json()
    assert shown["status"] == "succeeded"
    assert shown["progress"]["percent"] == 100
    assert shown["progress"]["message"] == "step 5 of 5"


def test_a_worker_run_streams_its_progress_and_final_status(
    tmp_path: Path, empty_pg_url: str, redis_prefix: str
) -> None:
    """Production topology: the worker writes the task's reports (coalesced) to
    PostgreSQL, the gateway's stream shows each one and ends with `succeeded`, and the
    finished run shows its final progress."""
    with production(tmp_path, empty_pg_url, redis_prefix) as api:
        run_id, events, heartbeats = follow(api, "report_steps", STEPS)
        _check(api, run_id, events, heartbeats)


def test_an_embedded_run_streams_its_progress_and_final_status(tmp_path: Path) -> None:
    """`jobsctl run` (SQLite, in-memory broker): the same stream from one process."""
    with embedded(tmp_path) as api:
        run_id, events, heartbeats = follow(api, "report_steps", STEPS)
        _check(api, run_id, events, heartbeats)


def test_stopping_the_api_ends_its_event_streams_instead_of_waiting_for_them(
    tmp_path: Path, empty_pg_url: str, redis_prefix: str
) -> None:
    """An open stream of a 60 s run is a request uvicorn waits for, up to the graceful
    timeout (30 s): one watcher held every API stop that long. On SIGTERM the stream
    now ends at once (the client reconnects elsewhere with its Last-Event-ID) and the
    process exits in seconds, without cancelling requests."""
    env = {
        **FAST,
        "JOBS_DATABASE_URL": empty_pg_url,
        "JOBS_REDIS_URL": redis_url(),
        "JOBS_REDIS_PREFIX": f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
    }
    assert jobsctl("migrate", env=env).returncode == 0
    port = free_port()
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    with (
        started("api", "--port", str(port), env=env, log=api_log) as api,
        # The worker need not wait for the 60 s run when the test ends.
        started(
            "worker",
            "--processes",
            "1",
            env={**env, "JOBS_WORKER__SHUTDOWN_TIMEOUT_S": "1"},
            log=worker_log,
        ),
    ):
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/ready", process=api, log=api_log)
        submitted = httpx.post(
            f"{base}/v1/tasks/sleep_for", json={"kwargs": {"seconds": 60}}, timeout=5
        )
        run_id = submitted.json()["run_id"]
        events: list[str] = []
        with httpx.stream("GET", f"{base}/v1/runs/{run_id}/events", timeout=30) as response:
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("event: "):
                    events.append(line)
                    break
            stopping = time.monotonic()
            os.killpg(api.pid, signal.SIGTERM)
            events += [line for line in lines if line.startswith("event: ")]
            stream_ended_s = time.monotonic() - stopping
        api.wait(timeout=25)
        exited_s = time.monotonic() - stopping
    assert events[0] == "event: status"
    assert stream_ended_s < 5, stream_ended_s
    assert exited_s < 10, exited_s
    assert "graceful shutdown exceeded" not in api_log.read_text()
    # The stop's last lines reach the log before the process ends on the signal.
    assert "Finished server process" in api_log.read_text()
