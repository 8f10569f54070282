"""Drain N no-op runs through one worker process with run recording on.

Measures, against the machine's Redis and PostgreSQL (own database and key prefix):
the time from the first enqueue (batched, ``enqueue_many``) until every run is recorded
``succeeded`` in PostgreSQL, i.e. throughput *including* history. Usage:

    uv run python -m benchmarks.throughput --runs 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

from benchmarks.services import REDIS_URL, clean_redis, create_database, drop_database

ROOT = Path(__file__).resolve().parents[1]


async def _drain(env: dict[str, str], runs: int, concurrency: int) -> dict[str, float]:
    os.environ.update(env)
    from jobs_service.broker import broker  # noqa: PLC0415 - after the environment is set
    from jobs_service.client import JobsClient  # noqa: PLC0415
    from jobs_service.core.settings import Settings  # noqa: PLC0415
    from jobs_service.infrastructure import migrate  # noqa: PLC0415
    from jobs_service.infrastructure.models import JobRun  # noqa: PLC0415
    from jobs_service.infrastructure.runtime import Runtime  # noqa: PLC0415

    settings = Settings.load()
    runtime = Runtime(settings)
    await migrate.upgrade(runtime.database)
    broker.state.runtime = runtime
    await broker.startup()
    client = JobsClient(broker, runtime)

    worker = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("jobsctl")),
            "worker",
            "--processes",
            "1",
            "--concurrency",
            str(concurrency),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        warm = await client.enqueue("do_nothing", {})
        await client.wait_for(warm, timeout_s=60, poll_s=0.05)

        async def succeeded() -> int:
            async with runtime.database.sessions() as session:
                query = (
                    select(func.count())
                    .select_from(JobRun)
                    .where(JobRun.task == "do_nothing", JobRun.status == "succeeded")
                )
                return int((await session.execute(query)).scalar_one())

        before = await succeeded()
        started = time.perf_counter()
        for offset in range(0, runs, 1000):
            await client.enqueue_many(
                "do_nothing", [{"n": i} for i in range(offset, min(runs, offset + 1000))]
            )
        enqueued = time.perf_counter() - started
        while await succeeded() - before < runs:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        await broker.shutdown()
        await runtime.stop()
    return {
        "runs": runs,
        "seconds": elapsed,
        "enqueue_seconds": enqueued,
        "runs_per_second": runs / elapsed,
    }


def _one(runs: int, concurrency: int) -> dict[str, float]:
    name = f"jobs_bench_{uuid.uuid4().hex[:8]}"
    prefix = f"jobs-bench-{uuid.uuid4().hex[:8]}"
    url = asyncio.run(create_database(name))
    env = {
        "JOBS_DATABASE_URL": url,
        "JOBS_REDIS_URL": REDIS_URL,
        "JOBS_REDIS_PREFIX": prefix,
        "JOBS_TASK_MODULES": "benchmarks.tasks",
        "JOBS_LOG_FORMAT": "json",
        "JOBS_LOG_LEVEL": "warning",
    }
    code = (
        f"import asyncio, json; from benchmarks.throughput import _drain; "
        f"print(json.dumps(asyncio.run(_drain({env!r}, {runs}, {concurrency}))))"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=900,
        )
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        asyncio.run(drop_database(name))
        asyncio.run(clean_redis(prefix))


def main() -> None:
    """Run the benchmark and print the median with min and max."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    results = [_one(args.runs, args.concurrency) for _ in range(args.repeat)]
    rates = [result["runs_per_second"] for result in results]
    summary = {
        "benchmark": "drain_noop_one_worker_with_history",
        "runs": args.runs,
        "repeat": args.repeat,
        "concurrency": args.concurrency,
        "runs_per_second": {
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
        },
        "enqueue_seconds_median": statistics.median(
            result["enqueue_seconds"] for result in results
        ),
    }
    out = ROOT / "benchmarks" / "results" / "latest.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{args.runs} no-op runs, 1 worker process, history in PostgreSQL: "
        f"median {summary['runs_per_second']['median']:.0f} runs/s "
        f"(min {min(rates):.0f}, max {max(rates):.0f}; {args.repeat} repetitions)"
    )


if __name__ == "__main__":
    main()
