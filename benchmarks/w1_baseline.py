"""W1 throughput, side by side: plain TaskIQ against Jobs Service on this machine.

Both contestants drain N runs of a task that does one Redis ``INCR`` on a counter key
of their own, with one worker process each, against the machine's Redis (own key
prefix) and, for Jobs Service, a fresh PostgreSQL database:

* plain TaskIQ: ``RedisStreamBroker`` with its defaults (:mod:`benchmarks.plain_taskiq_app`),
  its own ``kiq()`` producer keeping 100 sends in flight, drained by
  ``taskiq worker benchmarks.plain_taskiq_app:broker --workers 1``;
* Jobs Service: ``JobsClient.enqueue_many`` in batches of 1,000
  (:mod:`benchmarks.tasks`), drained by ``jobsctl worker --processes 1
  --concurrency 100`` with every run recorded in PostgreSQL.

Drain time runs from the first enqueue until the counter reaches N (polled); for Jobs
Service also until all N runs are recorded ``succeeded``. Each contestant starts a fresh
worker per repetition and warms it up with 20 runs before the clock starts; repetitions
alternate between the contestants. Prints median (min-max) runs/s and the ratio
Jobs/TaskIQ, and writes ``benchmarks/results/w1_baseline.json``; :func:`measure` returns
the same summary to the suite (:mod:`benchmarks.suite`). Usage:

    uv run python -m benchmarks.w1_baseline --runs 20000 --repeat 3
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
from benchmarks.figures import machine, spread
from benchmarks.processes import (
    ROOT,
    run_child,
    serve_child,
    stop_process,
    wait_for_counter,
    worker_child,
)
from benchmarks.profiling import cpu_seconds, print_profiles, profile_path, sampled
from benchmarks.services import REDIS_URL

__all__ = ["measure"]

RESULT = ROOT / "benchmarks" / "results" / "w1_baseline.json"
TARGET_RATIO = 2.0  # issue 7, W1: Jobs Service >= 2x plain TaskIQ
DRAIN_TIMEOUT_S = 240.0
WARM_RUNS = 20


# ------------------------------------------------------------ contestants (child side)


async def _drain_taskiq(config: dict[str, Any]) -> dict[str, float]:
    """Plain TaskIQ: ``kiq()`` with ``in_flight`` sends outstanding, one worker."""
    runs, prefix = config["runs"], config["prefix"]
    async with taskiq_producer() as app:
        worker = taskiq_worker(Path(config["log"]))
        redis = Redis.from_url(REDIS_URL)
        try:
            await warm_taskiq(redis, app, config["in_flight"], runs=WARM_RUNS)
            key = f"{prefix}:counter"
            child = worker_child(worker)
            with sampled(child, profile_path(config, "w1-taskiq")):
                cpu_before = cpu_seconds(child)
                started = time.perf_counter()
                await kiq_all(
                    app.bump_counter, ({"key": key} for _ in range(runs)), config["in_flight"]
                )
                enqueued = time.perf_counter() - started
                done = await wait_for_counter(redis, key, runs, DRAIN_TIMEOUT_S)
                cpu = cpu_seconds(child) - cpu_before
        finally:
            stop_process(worker)
            await redis.aclose()
    elapsed = done - started
    return {
        "seconds": elapsed,
        "enqueue_seconds": enqueued,
        "runs_per_second": runs / elapsed,
        "worker_cpu_us_per_run": cpu * 1e6 / runs,
    }


async def _drain_jobs(config: dict[str, Any]) -> dict[str, float]:
    """Jobs Service: ``enqueue_many`` batches, one ``jobsctl worker`` process."""
    runs, batch = config["runs"], config["batch"]
    async with jobs_producer() as jobs:
        client = jobs.client
        worker = jobs_worker(Path(config["log"]), concurrency=config["concurrency"])
        redis = Redis.from_url(REDIS_URL)
        try:
            await warm_jobs(redis, jobs, config["concurrency"], runs=WARM_RUNS)
            # Every warm-up run recorded, so the count below starts from a settled one.
            settled = time.perf_counter() + 60
            while (before := await jobs.succeeded("bump_counter")) < WARM_RUNS:
                if time.perf_counter() > settled:
                    msg = f"{before} of {WARM_RUNS} warm-up runs recorded after 60 s"
                    raise TimeoutError(msg)
                await asyncio.sleep(0.05)

            key = f"{jobs.prefix}:counter"
            child = worker_child(worker)
            with sampled(child, profile_path(config, "w1-jobs")):
                cpu_before = cpu_seconds(child)
                started = time.perf_counter()
                for offset in range(0, runs, batch):
                    size = min(batch, runs - offset)
                    await client.enqueue_many("bump_counter", [{"key": key}] * size)
                enqueued = time.perf_counter() - started
                done = await wait_for_counter(redis, key, runs, DRAIN_TIMEOUT_S)
                cpu = cpu_seconds(child) - cpu_before
            # The database is polled only once the counter is done: it does not slow the drain.
            deadline = done + DRAIN_TIMEOUT_S
            while (count := await jobs.succeeded("bump_counter") - before) < runs:
                if time.perf_counter() > deadline:
                    msg = f"{count} of {runs} runs recorded succeeded"
                    raise TimeoutError(msg)
                await asyncio.sleep(0.02)
            recorded = time.perf_counter()
        finally:
            stop_process(worker)
            await redis.aclose()
    elapsed = done - started
    return {
        "seconds": elapsed,
        "enqueue_seconds": enqueued,
        "runs_per_second": runs / elapsed,
        "recorded_seconds": recorded - started,
        "recorded_runs_per_second": runs / (recorded - started),
        "worker_cpu_us_per_run": cpu * 1e6 / runs,
    }


_CHILDREN = {"taskiq": _drain_taskiq, "jobs": _drain_jobs}


# ------------------------------------------------------------------ orchestration


def _one_taskiq(runs: int, in_flight: int, profile: str | None) -> dict[str, float]:
    with taskiq_resources("w1") as env:
        config = {
            "runs": runs,
            "in_flight": in_flight,
            "prefix": env["TASKIQ_BENCH_PREFIX"],
            "profile": profile,
        }
        return run_child("benchmarks.w1_baseline", "taskiq", config, env, 3 * DRAIN_TIMEOUT_S)


def _one_jobs(
    runs: int, batch: int, concurrency: int, log_level: str, profile: str | None
) -> dict[str, float]:
    with jobs_resources("w1", log_level=log_level) as env:
        config = {
            "runs": runs,
            "batch": batch,
            "concurrency": concurrency,
            "profile": profile,
        }
        return run_child("benchmarks.w1_baseline", "jobs", config, env, 3 * DRAIN_TIMEOUT_S)


def measure(
    *,
    runs: int = 20_000,
    repeat: int = 3,
    in_flight: int = 100,
    batch: int = 1000,
    concurrency: int = 100,
    log_level: str = "info",
    with_machine: bool = True,
    profile: str | None = None,
) -> dict[str, Any]:
    """Both contestants, ``repeat`` alternating repetitions; the summary as a dict.

    ``pass`` is the issue's verdict: Jobs' recorded-succeeded rate at least
    ``TARGET_RATIO`` times TaskIQ's rate, medians of the repetitions.
    """
    began = time.perf_counter()
    taskiq: list[dict[str, float]] = []
    jobs: list[dict[str, float]] = []
    for index in range(repeat):
        taskiq.append(_one_taskiq(runs, in_flight, profile))
        jobs.append(_one_jobs(runs, batch, concurrency, log_level, profile))
        print(
            f"W1 repetition {index + 1}/{repeat}: "
            f"TaskIQ {taskiq[-1]['runs_per_second']:.0f} runs/s, "
            f"Jobs {jobs[-1]['runs_per_second']:.0f} runs/s "
            f"({jobs[-1]['recorded_runs_per_second']:.0f} recorded)",
            file=sys.stderr,
            flush=True,
        )

    taskiq_rate = spread(r["runs_per_second"] for r in taskiq)
    jobs_rate = spread(r["runs_per_second"] for r in jobs)
    recorded_rate = spread(r["recorded_runs_per_second"] for r in jobs)
    ratio = jobs_rate["median"] / taskiq_rate["median"]
    recorded_ratio = recorded_rate["median"] / taskiq_rate["median"]
    return {
        "benchmark": "w1_throughput_in_run_baseline",
        "runs": runs,
        "repeat": repeat,
        **({"machine": machine()} if with_machine else {}),
        "contestants": {
            "taskiq": {
                "description": "plain TaskIQ RedisStreamBroker, defaults, kiq() with "
                f"{in_flight} in flight, `taskiq worker --workers 1`",
                "in_flight": in_flight,
                "runs_per_second": taskiq_rate,
                "enqueue_seconds_median": spread(r["enqueue_seconds"] for r in taskiq)["median"],
                "worker_cpu_us_per_run": spread(r["worker_cpu_us_per_run"] for r in taskiq),
                "repetitions": taskiq,
            },
            "jobs": {
                "description": f"Jobs Service, enqueue_many batches of {batch}, "
                f"`jobsctl worker --processes 1 --concurrency {concurrency}`, "
                f"history in PostgreSQL, JOBS_LOG_LEVEL={log_level}",
                "batch": batch,
                "concurrency": concurrency,
                "log_level": log_level,
                "runs_per_second": jobs_rate,
                "recorded_runs_per_second": recorded_rate,
                "enqueue_seconds_median": spread(r["enqueue_seconds"] for r in jobs)["median"],
                "worker_cpu_us_per_run": spread(r["worker_cpu_us_per_run"] for r in jobs),
                "repetitions": jobs,
            },
        },
        "ratio_jobs_to_taskiq": {"counter": ratio, "recorded": recorded_ratio},
        "target_ratio": TARGET_RATIO,
        "pass": recorded_ratio >= TARGET_RATIO,
        "wall_seconds": time.perf_counter() - began,
    }


def _rate(stats: dict[str, float]) -> str:
    return f"{stats['median']:>7.0f} ({stats['min']:.0f}-{stats['max']:.0f})"


def main() -> None:
    """Run both contestants, print the table and write the JSON result."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
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
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="also sample each worker process with py-spy during the drain; raw profiles "
        "go to DIR and the top functions are printed",
    )
    parser.add_argument("--child", choices=sorted(_CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve_child(_CHILDREN[args.child])
        return

    profile = str(Path(args.profile).resolve()) if args.profile else None
    if profile:
        Path(profile).mkdir(parents=True, exist_ok=True)
    summary = measure(
        runs=args.runs,
        repeat=args.repeat,
        in_flight=args.in_flight,
        batch=args.batch,
        concurrency=args.concurrency,
        log_level=args.jobs_log_level,
        profile=profile,
    )
    RESULT.write_text(json.dumps(summary, indent=2) + "\n")
    taskiq, jobs = summary["contestants"]["taskiq"], summary["contestants"]["jobs"]
    ratio = summary["ratio_jobs_to_taskiq"]
    rows = [
        ("plain TaskIQ (counter)", taskiq["runs_per_second"], "1.00"),
        ("Jobs Service (counter)", jobs["runs_per_second"], f"{ratio['counter']:.2f}"),
        (
            "Jobs Service (recorded succeeded)",
            jobs["recorded_runs_per_second"],
            f"{ratio['recorded']:.2f}",
        ),
    ]
    print()
    print(f"W1 throughput, one worker process each, {args.repeat} repetitions (median, min-max):")
    print(f"{'contestant':<36}{'runs':>7}  {'runs/s':>7} (min-max)      Jobs/TaskIQ")
    for name, stats, share in rows:
        print(f"{name:<36}{args.runs:>7}  {_rate(stats):<22}{share:>6}")
    for name, contestant in (("plain TaskIQ", taskiq), ("Jobs Service", jobs)):
        cpu = contestant["worker_cpu_us_per_run"]
        print(f"worker CPU per run, {name}: {_rate(cpu)} µs")
    verdict = "PASS" if summary["pass"] else "FAIL"
    print(f"target: Jobs >= {TARGET_RATIO:.1f}x TaskIQ (recorded): {verdict}")
    print(f"wrote {RESULT.relative_to(ROOT)} ({summary['wall_seconds']:.0f} s)")
    if profile:
        print_profiles(profile, ("w1-taskiq", "w1-jobs"), "the last drain")


if __name__ == "__main__":
    main()
