"""`jobsctl worker --processes 2`: two consumers, two heartbeats, work shared, one
metrics endpoint for both."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import httpx
import orjson
import redis

from tests.support.processes import free_port, jobsctl, started
from tests.support.services import redis_url

if TYPE_CHECKING:
    from pathlib import Path


def test_forked_worker_processes_each_have_their_own_consumer_and_heartbeat(
    tmp_path: Path, pg_url: str, redis_prefix: str
) -> None:
    prefix = f"{redis_prefix}-{uuid.uuid4().hex[:6]}"
    env = {"JOBS_DATABASE_URL": pg_url, "JOBS_REDIS_URL": redis_url(), "JOBS_REDIS_PREFIX": prefix}
    assert jobsctl("migrate", env=env).returncode == 0
    client = redis.Redis.from_url(redis_url())
    beats: list[dict[str, object]] = []
    try:
        with started("worker", "--processes", "2", env=env, log=tmp_path / "worker.log"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(beats) < 2:
                keys = list(client.scan_iter(match=f"{prefix}:workers:*"))
                beats = [orjson.loads(value) for value in client.mget(keys) if value]
                time.sleep(0.3)
    finally:
        client.close()
    assert len(beats) == 2, (tmp_path / "worker.log").read_text()[-2000:]
    assert len({beat["consumer"] for beat in beats}) == 2
    assert len({beat["pid"] for beat in beats}) == 2
    assert all(str(beat["consumer"]).startswith(f"{beat['host']}:{beat['pid']}:") for beat in beats)


def test_worker_metrics_add_up_every_process_on_one_port(
    tmp_path: Path, pg_url: str, redis_prefix: str
) -> None:
    """Two forked processes share 30 runs; the supervisor's endpoint reports all 30."""
    prefix = f"{redis_prefix}-{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {
        "JOBS_DATABASE_URL": pg_url,
        "JOBS_REDIS_URL": redis_url(),
        "JOBS_REDIS_PREFIX": prefix,
        "JOBS_WORKER__METRICS_PORT": str(port),
        "JOBS_TASK_MODULES": "tests.support.sample_tasks",
    }
    assert jobsctl("migrate", env=env).returncode == 0
    counted = 0.0
    with started("worker", "--processes", "2", env=env, log=tmp_path / "worker.log"):
        asyncio.run(_enqueue(env, 30))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and counted < 30:
            time.sleep(0.3)
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
            counted = _sample(text, 'jobs_runs_total{status="succeeded",task="count_items"}')
        durations = _sample(text, 'jobs_run_duration_seconds_count{task="count_items"}')
    assert counted == 30, (tmp_path / "worker.log").read_text()[-2000:]
    assert durations == 30


async def _enqueue(env: dict[str, str], count: int) -> None:
    from jobs_service.broker import broker as shared  # noqa: PLC0415
    from jobs_service.broker import build_broker  # noqa: PLC0415
    from jobs_service.client import JobsClient  # noqa: PLC0415
    from jobs_service.core.settings import Settings  # noqa: PLC0415
    from jobs_service.infrastructure.runtime import Runtime  # noqa: PLC0415
    from jobs_service.tasks.registry import list_tasks  # noqa: PLC0415

    settings = Settings(
        database_url=env["JOBS_DATABASE_URL"],
        redis_url=env["JOBS_REDIS_URL"],
        redis_prefix=env["JOBS_REDIS_PREFIX"],
    )
    broker = build_broker(settings)
    for info in list_tasks(shared):
        broker.register_task(info.task.original_func, info.name, **info.task.labels)
    runtime = Runtime(settings)
    await broker.startup()
    try:
        await JobsClient(broker, runtime).enqueue_many(
            "count_items", [{"items": [str(n)]} for n in range(count)]
        )
    finally:
        await broker.shutdown()
        await runtime.stop()


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
