"""W3 concurrency, side by side: 2,000 runs that each sleep 50 ms, 100 slots.

Each run awaits ``asyncio.sleep(0.05)`` and then bumps a Redis counter
(:func:`benchmarks.task_bodies.sleep_then_count`, the same for both), so with 100
concurrent slots the ideal drain is 2,000 / 100 x 0.05 s = 1.0 s: what is measured is
how well a worker keeps its slots busy — fetching ahead, starting runs, settling them.
On a slow machine that is CPU after all (a worker's CPU for 2,000 runs can approach the
ideal second), so each worker's CPU time per run is reported too. The drain runs from
the first enqueue until the counter reaches N, so enqueueing is part of it:

* plain TaskIQ: ``kiq()`` with 100 sends in flight, drained by ``taskiq worker
  benchmarks.plain_taskiq_app:broker --workers 1 --max-async-tasks 100``;
* Jobs Service: ``JobsClient.enqueue_many`` in batches of 1,000, drained by
  ``jobsctl worker --processes 1 --concurrency 100`` with the full middleware stack
  (Jobs also reports when every run is recorded ``succeeded``).

Fresh worker per repetition, warmed up before the clock. PASS when the median of Jobs'
drain is at most 1.15 x the ideal. Usage:

    uv run python -m benchmarks.w3_concurrency --runs 2000 --repeat 3
    uv run python -m benchmarks.w3_concurrency --profile /tmp/w3   # with py-spy profiles
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from benchmarks.contestants import (
    jobs_producer,
    jobs_resources,
    jobs_worker,
    kiq_all,
    taskiq_producer,
    taskiq_resources,
    taskiq_worker,
    warm_jobs,
    warm_taskiq,
)
from benchmarks.figures import spread
from benchmarks.processes import (
    run_child,
    serve_child,
    stop_process,
    wait_for_counter,
    worker_child,
)
from benchmarks.profiling import cpu_seconds, print_profiles, profile_path, sampled
from benchmarks.services import REDIS_URL

__all__ = ["TARGET_FACTOR", "measure"]

TARGET_FACTOR = 1.15  # issue 7, W3: drain <= 1.15 x the ideal
DRAIN_TIMEOUT_S = 120.0


# ------------------------------------------------------------ contestants (child side)


async def _taskiq(config: dict[str, Any]) -> dict[str, float]:
    runs, sleep_s = config["runs"], config["sleep_s"]
    async with taskiq_producer() as app:
        worker = taskiq_worker(Path(config["log"]), max_async_tasks=config["concurrency"])
        redis = Redis.from_url(REDIS_URL)
        try:
            await warm_taskiq(redis, app, config["concurrency"])
            key = f"{app.PREFIX}:counter"
            kwargs = ({"key": key, "seconds": sleep_s} for _ in range(runs))
            child = worker_child(worker)
            with sampled(child, profile_path(config, "w3-taskiq")):
                cpu_before = cpu_seconds(child)
                started = time.perf_counter()
                await kiq_all(app.sleep_then_count, kwargs, config["in_flight"])
                enqueued = time.perf_counter() - started
                done = await wait_for_counter(redis, key, runs, DRAIN_TIMEOUT_S)
                cpu = cpu_seconds(child) - cpu_before
        finally:
            stop_process(worker)
            await redis.aclose()
    return {
        "seconds": done - started,
        "enqueue_seconds": enqueued,
        "worker_cpu_us_per_run": cpu / runs * 1e6,
    }


async def _jobs(config: dict[str, Any]) -> dict[str, float]:
    runs, sleep_s, batch = config["runs"], config["sleep_s"], config["batch"]
    async with jobs_producer() as jobs:
        client = jobs.client
        worker = jobs_worker(Path(config["log"]), concurrency=config["concurrency"])
        redis = Redis.from_url(REDIS_URL)
        try:
            await warm_jobs(redis, jobs, config["concurrency"])
            # The warm-up wave's runs (the same task) recorded first, so the count of
            # recorded runs below is the measured ones'.
            settled = time.perf_counter() + 60
            while (before := await jobs.succeeded("sleep_then_count")) < config["concurrency"]:
                if time.perf_counter() > settled:
                    msg = f"{before} warm-up runs recorded after 60 s"
                    raise TimeoutError(msg)
                await asyncio.sleep(0.05)
            key = f"{jobs.prefix}:counter"
            child = worker_child(worker)
            with sampled(child, profile_path(config, "w3-jobs")):
                cpu_before = cpu_seconds(child)
                started = time.perf_counter()
                for offset in range(0, runs, batch):
                    size = min(batch, runs - offset)
                    kwargs = [{"key": key, "seconds": sleep_s}] * size
                    await client.enqueue_many("sleep_then_count", kwargs)
                enqueued = time.perf_counter() - started
                done = await wait_for_counter(redis, key, runs, DRAIN_TIMEOUT_S)
                cpu = cpu_seconds(child) - cpu_before
            while (count := await jobs.succeeded("sleep_then_count") - before) < runs:
                if time.perf_counter() > done + DRAIN_TIMEOUT_S:
                    msg = f"{count} of {runs} runs recorded succeeded"
                    raise TimeoutError(msg)
                await asyncio.sleep(0.02)
            recorded = time.perf_counter()
        finally:
            stop_process(worker)
            await redis.aclose()
    return {
        "seconds": done - started,
        "enqueue_seconds": enqueued,
        "recorded_seconds": recorded - started,
        "worker_cpu_us_per_run": cpu / runs * 1e6,
    }


_CHILDREN = {"taskiq": _taskiq, "jobs": _jobs}


# ------------------------------------------------------------------ orchestration


def measure(
    *,
    runs: int = 2000,
    sleep_s: float = 0.05,
    concurrency: int = 100,
    repeat: int = 3,
    in_flight: int = 100,
    batch: int = 1000,
    profile: str | None = None,
) -> dict[str, Any]:
    """Both contestants, ``repeat`` alternating repetitions; the summary as a dict."""
    ideal = runs / concurrency * sleep_s
    base = {"runs": runs, "sleep_s": sleep_s, "concurrency": concurrency, "profile": profile}
    child_timeout = 90 + 2 * DRAIN_TIMEOUT_S
    taskiq: list[dict[str, float]] = []
    jobs: list[dict[str, float]] = []
    for index in range(repeat):
        with taskiq_resources("w3") as env:
            config = {**base, "in_flight": in_flight}
            taskiq.append(
                run_child("benchmarks.w3_concurrency", "taskiq", config, env, child_timeout)
            )
        with jobs_resources("w3") as env:
            config = {**base, "batch": batch}
            jobs.append(run_child("benchmarks.w3_concurrency", "jobs", config, env, child_timeout))
        print(
            f"W3 repetition {index + 1}/{repeat}: drain TaskIQ {taskiq[-1]['seconds']:.2f} s, "
            f"Jobs {jobs[-1]['seconds']:.2f} s (ideal {ideal:.2f} s)",
            file=sys.stderr,
            flush=True,
        )
    jobs_drain = spread(r["seconds"] for r in jobs)
    return {
        "benchmark": "w3_concurrency",
        "runs": runs,
        "sleep_s": sleep_s,
        "concurrency": concurrency,
        "repeat": repeat,
        "ideal_seconds": ideal,
        "target_seconds": TARGET_FACTOR * ideal,
        "contestants": {
            "taskiq": {
                "description": f"kiq() with {in_flight} in flight, `taskiq worker --workers 1 "
                f"--max-async-tasks {concurrency}`",
                "seconds": spread(r["seconds"] for r in taskiq),
                "worker_cpu_us_per_run": spread(r["worker_cpu_us_per_run"] for r in taskiq),
                "repetitions": taskiq,
            },
            "jobs": {
                "description": f"enqueue_many batches of {batch}, `jobsctl worker "
                f"--processes 1 --concurrency {concurrency}`",
                "seconds": jobs_drain,
                "recorded_seconds": spread(r["recorded_seconds"] for r in jobs),
                "worker_cpu_us_per_run": spread(r["worker_cpu_us_per_run"] for r in jobs),
                "repetitions": jobs,
            },
        },
        "pass": jobs_drain["median"] <= TARGET_FACTOR * ideal,
    }


def main() -> None:
    """Measure, print the comparison as JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds each run sleeps")
    parser.add_argument("--concurrency", type=int, default=100, help="worker task slots")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per contestant")
    parser.add_argument(
        "--profile", metavar="DIR", help="write py-spy profiles of both workers into DIR"
    )
    parser.add_argument("--child", choices=sorted(_CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve_child(_CHILDREN[args.child])
        return
    profile = str(Path(args.profile).resolve()) if args.profile else None
    if profile:
        Path(profile).mkdir(parents=True, exist_ok=True)
    result = measure(
        runs=args.runs,
        sleep_s=args.sleep,
        concurrency=args.concurrency,
        repeat=args.repeat,
        profile=profile,
    )
    print(json.dumps(result, indent=2))
    if profile:
        print_profiles(profile, ("w3-taskiq", "w3-jobs"), "the last drain")


if __name__ == "__main__":
    main()
