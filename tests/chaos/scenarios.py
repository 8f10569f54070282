"""Failure scenarios against real processes: what was submitted, completed, lost, doubled.

Each scenario starts its own gateway and workers (``jobsctl`` processes) on PostgreSQL
and Redis, submits work through the HTTP API, breaks something, and then counts:

- **completed**: runs whose record ended ``succeeded``;
- **lost**: submitted runs that never completed (in time) or whose effect never landed;
- **duplicated**: runs whose effect landed more than once (the work was done twice).

``python -m tests.chaos`` runs them at full size and prints the table (``make chaos``);
``tests/e2e/test_chaos.py`` runs them small in CI.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import redis

from tests.support.chaos_tasks import effects_key
from tests.support.processes import free_port, jobsctl, started, wait_for_http
from tests.support.redis_server import PrivateRedis

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator
    from pathlib import Path

__all__ = ["SCENARIOS", "Cluster", "Row"]

FINAL = ("succeeded", "failed", "dead", "cancelled")


@dataclass(frozen=True)
class Row:
    """One line of the failure table."""

    scenario: str
    submitted: int
    completed: int
    lost: int
    duplicated: int
    seconds: float
    note: str = ""


class Cluster:
    """A gateway and workers of one scenario, on their own Redis key prefix."""

    def __init__(self, workdir: Path, database_url: str, redis_url: str, **env: str) -> None:
        self.workdir = workdir
        self.redis_url = redis_url
        self.env = {
            "JOBS_DATABASE_URL": database_url,
            "JOBS_REDIS_URL": redis_url,
            "JOBS_REDIS_PREFIX": f"chaos-{uuid.uuid4().hex[:8]}",
            "JOBS_TASK_MODULES": "tests.support.sample_tasks,tests.support.chaos_tasks",
            "JOBS_BROKER__IDLE_TIMEOUT_S": "3",
            "JOBS_BROKER__RECLAIM_INTERVAL_S": "0.5",
            "JOBS_WORKER__RETRY_BACKOFF_S": "0.3",
            "JOBS_WORKER__SHUTDOWN_TIMEOUT_S": "20",
            **env,
        }
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self._logs = 0

    def _log(self, name: str) -> Path:
        self._logs += 1
        return self.workdir / f"{self._logs:02d}-{name}.log"

    @contextlib.contextmanager
    def gateway(self) -> Iterator[subprocess.Popen[bytes]]:
        """The API process, ready."""
        result = jobsctl("migrate", env=self.env)
        assert result.returncode == 0, result.stderr
        log = self._log("api")
        with started("api", "--port", str(self.port), env=self.env, log=log) as process:
            wait_for_http(f"{self.api}/health", process=process, log=log)
            yield process

    @contextlib.contextmanager
    def worker(self, concurrency: int = 100) -> Iterator[subprocess.Popen[bytes]]:
        """One worker process."""
        args = ("worker", "--processes", "1", "--concurrency", str(concurrency))
        with started(*args, env=self.env, log=self._log("worker")) as process:
            yield process

    def submit(self, task: str, kwargs: dict[str, Any], count: int) -> list[str]:
        """Queue ``count`` runs through the batch endpoint."""
        run_ids: list[str] = []
        while len(run_ids) < count:
            size = min(500, count - len(run_ids))
            response = httpx.post(
                f"{self.api}/v1/tasks/{task}/batch",
                json={"items": [{"kwargs": kwargs}] * size},
                timeout=30,
            )
            response.raise_for_status()
            run_ids += response.json()["run_ids"]
        return run_ids

    def statuses(self, task: str) -> dict[str, str]:
        """run id → status of every run of ``task``."""
        found: dict[str, str] = {}
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"task": task, "limit": 500}
            if cursor:
                params["cursor"] = cursor
            page = httpx.get(f"{self.api}/v1/runs", params=params, timeout=30).json()
            found.update({item["run_id"]: item["status"] for item in page["items"]})
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Poll ``done`` until it holds or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            time.sleep(0.25)
        return done()

    def effects(self) -> dict[str, int]:
        """run id → how many times its effect landed."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            raw = client.hgetall(effects_key(self.env["JOBS_REDIS_PREFIX"]))
        finally:
            client.close()
        return {k.decode(): int(v) for k, v in raw.items()}

    def tally(self, name: str, run_ids: list[str], started_at: float, note: str = "") -> Row:
        """Count completed, lost and duplicated among ``run_ids``."""
        statuses = self.statuses("apply_effect")
        effects = self.effects()
        completed = sum(1 for run_id in run_ids if statuses.get(run_id) == "succeeded")
        lost = sum(
            1
            for run_id in run_ids
            if statuses.get(run_id) != "succeeded" or effects.get(run_id, 0) == 0
        )
        duplicated = sum(1 for run_id in run_ids if effects.get(run_id, 0) > 1)
        return Row(
            name, len(run_ids), completed, lost, duplicated, time.monotonic() - started_at, note
        )

    def all_final(self, run_ids: list[str]) -> Callable[[], bool]:
        """A predicate: every run in ``run_ids`` reached a final status."""

        def check() -> bool:
            statuses = self.statuses("apply_effect")
            return all(statuses.get(run_id) in FINAL for run_id in run_ids)

        return check

    def started(self, run_ids: list[str]) -> Callable[[], bool]:
        """A predicate: every run in ``run_ids`` started, and some still run."""

        def check() -> bool:
            known = self.statuses("apply_effect")
            statuses = [known.get(run_id) for run_id in run_ids]
            began = all(status in ("running", "succeeded") for status in statuses)
            return began and "running" in statuses

        return check

    def running(self, run_ids: list[str], at_least: int) -> Callable[[], bool]:
        """A predicate: at least ``at_least`` of ``run_ids`` are running."""

        def check() -> bool:
            statuses = self.statuses("apply_effect")
            return sum(statuses.get(run_id) == "running" for run_id in run_ids) >= at_least

        return check


def _kill(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    os.killpg(process.pid, sig)


def worker_sigkill(cluster: Cluster, size: int) -> Row:
    """SIGKILL a worker with ``size`` slow tasks in flight; a second worker finishes."""
    begin = time.monotonic()
    with cluster.gateway():
        with cluster.worker(concurrency=size) as doomed:
            run_ids = cluster.submit("apply_effect", {"seconds": 4}, size)
            # Every run started (on a loaded machine the first may already be done).
            assert cluster.wait_until(cluster.started(run_ids), 60), "not all started"
            _kill(doomed, signal.SIGKILL)
            doomed.wait(timeout=10)
        with cluster.worker(concurrency=size):
            cluster.wait_until(cluster.all_final(run_ids), 90)
        return cluster.tally("worker SIGKILL mid-task", run_ids, begin, f"{size} tasks of 4 s")


def long_task(cluster: Cluster, size: int) -> Row:
    """Tasks running four times the reclaim bound, with a second idle worker waiting to steal."""
    begin = time.monotonic()
    with cluster.gateway(), cluster.worker(), cluster.worker():
        run_ids = cluster.submit("apply_effect", {"seconds": 12}, size)
        cluster.wait_until(cluster.all_final(run_ids), 90)
        return cluster.tally("task longer than the reclaim bound", run_ids, begin, "12 s vs 3 s")


def worker_sigterm(cluster: Cluster, size: int) -> Row:
    """SIGTERM a worker with tasks in flight: they finish or go back; none is lost."""
    begin = time.monotonic()
    with cluster.gateway():
        with cluster.worker(concurrency=size) as leaving:
            run_ids = cluster.submit("apply_effect", {"seconds": 2}, size * 2)
            cluster.wait_until(cluster.running(run_ids, 1), 60)
            _kill(leaving, signal.SIGTERM)
            leaving.wait(timeout=60)
        with cluster.worker(concurrency=size):
            cluster.wait_until(cluster.all_final(run_ids), 90)
        return cluster.tally("worker SIGTERM mid-stream", run_ids, begin, f"{size} in flight")


def redis_restart(cluster: Cluster, size: int, server: PrivateRedis) -> Row:
    """Restart Redis (with its append-only file) while the gateway and a worker run."""
    begin = time.monotonic()
    with cluster.gateway(), cluster.worker():
        before = cluster.submit("apply_effect", {"seconds": 0.5}, size)
        server.stop()
        time.sleep(1)
        server.start()
        after: list[str] = []
        deadline = time.monotonic() + 30
        while not after and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                after = cluster.submit("apply_effect", {"seconds": 0.5}, size)
            time.sleep(0.5)
        run_ids = before + after
        cluster.wait_until(cluster.all_final(run_ids), 90)
        return cluster.tally("Redis restart mid-stream", run_ids, begin, "AOF, fsync always")


SCENARIOS: dict[str, Callable[..., Row]] = {
    "worker_sigkill": worker_sigkill,
    "long_task": long_task,
    "worker_sigterm": worker_sigterm,
    "redis_restart": redis_restart,
}


def format_table(rows: list[Row]) -> str:
    """The table ``make chaos`` prints."""
    header = ("scenario", "submitted", "completed", "lost", "duplicated", "seconds", "note")
    lines = [
        (
            r.scenario,
            str(r.submitted),
            str(r.completed),
            str(r.lost),
            str(r.duplicated),
            f"{r.seconds:.1f}",
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *lines]
    )
