"""W1 throughput, side by side: plain TaskIQ against Jobs Service on this machine.

Both contestants drain N runs of a task that does one Redis ``INCR`` on a counter key
of their own, with one worker process each, against the machine's Redis (own key
prefix) and, for Jobs Service, a fresh PostgreSQL database:

* plain TaskIQ: ``RedisStreamBroker`` with its defaults (:mod:`benchmarks.plain_taskiq_app`),
  its own ``kiq()`` producer keeping 100 sends in flight, drained by
  ``taskiq worker benchmarks.plain_taskiq_app:broker --workers 1``;
* Jobs Service: ``JobsClient.enqueue_many`` in batches of 1,000
  (:mod:`benchmarks.w1_tasks`), drained by ``jobsctl worker --processes 1
  --concurrency 100`` with every run recorded in PostgreSQL.

Drain time runs from the first enqueue until the counter reaches N (polled); for Jobs
Service also until all N runs are recorded ``succeeded``. Each contestant starts a fresh
worker per repetition and warms it up with one run before the clock starts; repetitions
alternate between the contestants. Prints median (min-max) runs/s and the ratio
Jobs/TaskIQ, and writes ``benchmarks/results/w1_baseline.json``. Usage:

    uv run python -m benchmarks.w1_baseline --runs 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from benchmarks.services import ADMIN_URL, REDIS_URL, clean_redis, create_database, drop_database

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "w1_baseline.json"
TARGET_RATIO = 2.0  # issue 7, W1: Jobs Service >= 2x plain TaskIQ
DRAIN_TIMEOUT_S = 240.0
POLL_S = 0.005  # counter polling: one GET every 5 ms, far below the drain's resolution


# --------------------------------------------------------------------------- helpers


async def _wait_for_counter(redis: Redis, key: str, target: int, timeout_s: float) -> float:
    """Poll ``key`` until it reaches ``target``; the perf_counter when it did."""
    deadline = time.perf_counter() + timeout_s
    while True:
        value = await redis.get(key)
        now = time.perf_counter()
        if value is not None and int(value) >= target:
            return now
        if now > deadline:
            msg = f"counter {key} at {int(value or 0)} of {target} after {timeout_s:.0f} s"
            raise TimeoutError(msg)
        await asyncio.sleep(POLL_S)


def _start_worker(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)


# ------------------------------------------------------------ contestants (child side)


async def _drain_taskiq(runs: int, in_flight: int, prefix: str, log: Path) -> dict[str, float]:
    """Plain TaskIQ: ``kiq()`` with ``in_flight`` sends outstanding, one worker."""
    os.environ["W1_TASKIQ_PREFIX"] = prefix
    os.environ["W1_REDIS_URL"] = REDIS_URL
    from benchmarks.plain_taskiq_app import broker, bump_counter  # noqa: PLC0415

    await broker.startup()  # creates the consumer group before anything is sent
    worker = _start_worker(
        [
            str(Path(sys.executable).with_name("taskiq")),
            "worker",
            "benchmarks.plain_taskiq_app:broker",
            "--workers",
            "1",
        ],
        {"W1_TASKIQ_PREFIX": prefix, "W1_REDIS_URL": REDIS_URL},
        log,
    )
    redis = Redis.from_url(REDIS_URL)
    try:
        await bump_counter.kiq(f"{prefix}:warm")
        await _wait_for_counter(redis, f"{prefix}:warm", 1, 60)

        key = f"{prefix}:counter"
        remaining = iter(range(runs))

        async def sender() -> None:
            for _ in remaining:  # shared iterator: in_flight senders, one send each
                await bump_counter.kiq(key)

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(in_flight)))
        enqueued = time.perf_counter() - started
        done = await _wait_for_counter(redis, key, runs, DRAIN_TIMEOUT_S)
    finally:
        _stop_worker(worker)
        await redis.aclose()
        await broker.shutdown()
    elapsed = done - started
    return {"seconds": elapsed, "enqueue_seconds": enqueued, "runs_per_second": runs / elapsed}


async def _drain_jobs(runs: int, batch: int, concurrency: int, log: Path) -> dict[str, float]:
    """Jobs Service: ``enqueue_many`` batches, one ``jobsctl worker`` process."""
    from sqlalchemy import func, select  # noqa: PLC0415

    from jobs_service.broker import broker  # noqa: PLC0415 - after the environment is set
    from jobs_service.client import JobsClient  # noqa: PLC0415
    from jobs_service.core.settings import Settings  # noqa: PLC0415
    from jobs_service.infrastructure import migrate  # noqa: PLC0415
    from jobs_service.infrastructure.models import JobRun  # noqa: PLC0415
    from jobs_service.infrastructure.runtime import Runtime  # noqa: PLC0415

    settings = Settings.load()
    prefix = settings.redis_prefix
    runtime = Runtime(settings)
    await migrate.upgrade(runtime.database)
    broker.state.runtime = runtime
    await broker.startup()
    client = JobsClient(broker, runtime)
    worker = _start_worker(
        [
            str(Path(sys.executable).with_name("jobsctl")),
            "worker",
            "--processes",
            "1",
            "--concurrency",
            str(concurrency),
        ],
        {},
        log,
    )
    redis = Redis.from_url(REDIS_URL)

    async def succeeded() -> int:
        async with runtime.database.sessions() as session:
            query = (
                select(func.count())
                .select_from(JobRun)
                .where(JobRun.task == "bump_counter", JobRun.status == "succeeded")
            )
            return int((await session.execute(query)).scalar_one())

    try:
        warm = await client.enqueue("bump_counter", {"key": f"{prefix}:warm"})
        await client.wait_for(warm, timeout_s=60, poll_s=0.05)
        before = await succeeded()

        key = f"{prefix}:counter"
        started = time.perf_counter()
        for offset in range(0, runs, batch):
            size = min(batch, runs - offset)
            await client.enqueue_many("bump_counter", [{"key": key}] * size)
        enqueued = time.perf_counter() - started
        done = await _wait_for_counter(redis, key, runs, DRAIN_TIMEOUT_S)
        # The database is polled only once the counter is done: it does not slow the drain.
        deadline = done + DRAIN_TIMEOUT_S
        while (count := await succeeded() - before) < runs:
            if time.perf_counter() > deadline:
                msg = f"{count} of {runs} runs recorded succeeded"
                raise TimeoutError(msg)
            await asyncio.sleep(0.02)
        recorded = time.perf_counter()
    finally:
        _stop_worker(worker)
        await redis.aclose()
        await broker.shutdown()
        await runtime.stop()
    elapsed = done - started
    return {
        "seconds": elapsed,
        "enqueue_seconds": enqueued,
        "runs_per_second": runs / elapsed,
        "recorded_seconds": recorded - started,
        "recorded_runs_per_second": runs / (recorded - started),
    }


def _child(contestant: str, config: dict[str, Any]) -> None:
    log = Path(config["log"])
    if contestant == "taskiq":
        result = asyncio.run(
            _drain_taskiq(config["runs"], config["in_flight"], config["prefix"], log)
        )
    else:
        result = asyncio.run(
            _drain_jobs(config["runs"], config["batch"], config["concurrency"], log)
        )
    print(json.dumps(result))


# ------------------------------------------------------------------ orchestration


def _run_child(contestant: str, config: dict[str, Any], env: dict[str, str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="w1-") as tmp:
        log = Path(tmp) / "worker.log"
        config = {**config, "log": str(log)}
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.w1_baseline", "--child", contestant],
            input=json.dumps(config),
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=3 * DRAIN_TIMEOUT_S,
            check=False,
        )
        if out.returncode != 0:
            worker_log = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            msg = (
                f"{contestant} run failed ({out.returncode}):\n{out.stderr[-3000:]}\n"
                f"worker log tail:\n{worker_log}"
            )
            raise RuntimeError(msg)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _one_taskiq(args: argparse.Namespace) -> dict[str, float]:
    prefix = f"w1-taskiq-{uuid.uuid4().hex[:8]}"
    config = {"runs": args.runs, "in_flight": args.in_flight, "prefix": prefix}
    try:
        return _run_child("taskiq", config, {})
    finally:
        asyncio.run(clean_redis(prefix))


def _one_jobs(args: argparse.Namespace) -> dict[str, float]:
    name = f"jobs_w1_{uuid.uuid4().hex[:8]}"
    prefix = f"w1-jobs-{uuid.uuid4().hex[:8]}"
    url = asyncio.run(create_database(name))
    env = {
        "JOBS_DATABASE_URL": url,
        "JOBS_REDIS_URL": REDIS_URL,
        "JOBS_REDIS_PREFIX": prefix,
        "JOBS_TASK_MODULES": "benchmarks.w1_tasks",
        "JOBS_LOG_FORMAT": "json",
        "JOBS_LOG_LEVEL": args.jobs_log_level,
    }
    config = {"runs": args.runs, "batch": args.batch, "concurrency": args.concurrency}
    try:
        return _run_child("jobs", config, env)
    finally:
        asyncio.run(drop_database(name))
        asyncio.run(clean_redis(prefix))


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def _server_versions() -> dict[str, str]:
    async with Redis.from_url(REDIS_URL) as redis:
        info = await redis.info("server")
    connection = await asyncpg.connect(ADMIN_URL)
    postgres = str(await connection.fetchval("SHOW server_version"))
    await connection.close()
    return {"redis": str(info.get("redis_version")), "postgresql": postgres}


def _machine() -> dict[str, Any]:
    packages = ("taskiq", "taskiq-redis", "redis", "uvloop", "asyncpg")
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "absent"
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "servers": asyncio.run(_server_versions()),
    }


def _rate(stats: dict[str, float]) -> str:
    return f"{stats['median']:>7.0f} ({stats['min']:.0f}-{stats['max']:.0f})"


def main() -> None:
    """Run both contestants, print the table and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20_000, help="runs per drain")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per contestant")
    parser.add_argument("--in-flight", type=int, default=100, help="TaskIQ kiq() in flight")
    parser.add_argument("--batch", type=int, default=1000, help="Jobs enqueue_many batch")
    parser.add_argument("--concurrency", type=int, default=100, help="Jobs worker concurrency")
    parser.add_argument(
        "--jobs-log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="JOBS_LOG_LEVEL of the Jobs worker (info, the default, logs every run's "
        "lifecycle; the log goes to a temporary file)",
    )
    parser.add_argument("--child", choices=["taskiq", "jobs"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, json.loads(sys.stdin.read()))
        return

    began = time.perf_counter()
    taskiq: list[dict[str, float]] = []
    jobs: list[dict[str, float]] = []
    for index in range(args.repeat):
        taskiq.append(_one_taskiq(args))
        jobs.append(_one_jobs(args))
        print(
            f"repetition {index + 1}/{args.repeat}: "
            f"TaskIQ {taskiq[-1]['runs_per_second']:.0f} runs/s, "
            f"Jobs {jobs[-1]['runs_per_second']:.0f} runs/s "
            f"({jobs[-1]['recorded_runs_per_second']:.0f} recorded)",
            flush=True,
        )

    taskiq_rate = _stats([r["runs_per_second"] for r in taskiq])
    jobs_rate = _stats([r["runs_per_second"] for r in jobs])
    recorded_rate = _stats([r["recorded_runs_per_second"] for r in jobs])
    ratio = jobs_rate["median"] / taskiq_rate["median"]
    recorded_ratio = recorded_rate["median"] / taskiq_rate["median"]
    summary = {
        "benchmark": "w1_throughput_in_run_baseline",
        "runs": args.runs,
        "repeat": args.repeat,
        "machine": _machine(),
        "contestants": {
            "taskiq": {
                "description": "plain TaskIQ RedisStreamBroker, defaults, kiq() with "
                f"{args.in_flight} in flight, `taskiq worker --workers 1`",
                "in_flight": args.in_flight,
                "runs_per_second": taskiq_rate,
                "enqueue_seconds_median": statistics.median(r["enqueue_seconds"] for r in taskiq),
                "repetitions": taskiq,
            },
            "jobs": {
                "description": f"Jobs Service, enqueue_many batches of {args.batch}, "
                f"`jobsctl worker --processes 1 --concurrency {args.concurrency}`, "
                f"history in PostgreSQL, JOBS_LOG_LEVEL={args.jobs_log_level}",
                "batch": args.batch,
                "concurrency": args.concurrency,
                "log_level": args.jobs_log_level,
                "runs_per_second": jobs_rate,
                "recorded_runs_per_second": recorded_rate,
                "enqueue_seconds_median": statistics.median(r["enqueue_seconds"] for r in jobs),
                "repetitions": jobs,
            },
        },
        "ratio_jobs_to_taskiq": {"counter": ratio, "recorded": recorded_ratio},
        "target_ratio": TARGET_RATIO,
        "pass": recorded_ratio >= TARGET_RATIO,
        "wall_seconds": time.perf_counter() - began,
    }
    RESULT.write_text(json.dumps(summary, indent=2) + "\n")

    rows = [
        ("plain TaskIQ (counter)", taskiq_rate, "1.00"),
        ("Jobs Service (counter)", jobs_rate, f"{ratio:.2f}"),
        ("Jobs Service (recorded succeeded)", recorded_rate, f"{recorded_ratio:.2f}"),
    ]
    print()
    print(f"W1 throughput, one worker process each, {args.repeat} repetitions (median, min-max):")
    print(f"{'contestant':<36}{'runs':>7}  {'runs/s':>7} (min-max)      Jobs/TaskIQ")
    for name, stats, share in rows:
        print(f"{name:<36}{args.runs:>7}  {_rate(stats):<22}{share:>6}")
    verdict = "PASS" if summary["pass"] else "FAIL"
    print(f"target: Jobs >= {TARGET_RATIO:.1f}x TaskIQ (recorded): {verdict}")
    print(f"wrote {RESULT.relative_to(ROOT)} ({summary['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
