"""Drain N no-op runs through one worker process with run recording on.

Measures, against the machine's Redis and PostgreSQL (own database and key prefix):
the time from the first enqueue (batched, ``enqueue_many``) until every run is recorded
``succeeded`` in PostgreSQL, i.e. throughput *including* history, for Jobs Service
alone. W1 (:mod:`benchmarks.w1_baseline`) measures the same drain beside plain TaskIQ
and is what ``make bench`` runs; this one writes ``benchmarks/results/throughput.json``.
Usage:

    uv run python -m benchmarks.throughput --runs 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.contestants import jobs_producer, jobs_resources, jobs_worker
from benchmarks.figures import spread
from benchmarks.processes import ROOT, run_child, serve_child, stop_process

DRAIN_TIMEOUT_S = 900.0


async def _drain(config: dict[str, Any]) -> dict[str, float]:
    runs = config["runs"]
    async with jobs_producer() as jobs:
        client = jobs.client
        worker = jobs_worker(Path(config["log"]), concurrency=config["concurrency"])
        try:
            warm = await client.enqueue("do_nothing", {})
            await client.wait_for(warm, timeout_s=60, poll_s=0.05)
            before = await jobs.succeeded("do_nothing")
            started = time.perf_counter()
            for offset in range(0, runs, 1000):
                await client.enqueue_many(
                    "do_nothing", [{"n": i} for i in range(offset, min(runs, offset + 1000))]
                )
            enqueued = time.perf_counter() - started
            while await jobs.succeeded("do_nothing") - before < runs:
                if time.perf_counter() - started > DRAIN_TIMEOUT_S:
                    msg = f"not drained after {DRAIN_TIMEOUT_S:.0f} s"
                    raise TimeoutError(msg)
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
        finally:
            stop_process(worker)
    return {
        "runs": runs,
        "seconds": elapsed,
        "enqueue_seconds": enqueued,
        "runs_per_second": runs / elapsed,
    }


def _one(runs: int, concurrency: int) -> dict[str, Any]:
    with jobs_resources("throughput", log_level="warning") as env:
        config = {"runs": runs, "concurrency": concurrency}
        return run_child("benchmarks.throughput", "jobs", config, env, DRAIN_TIMEOUT_S + 120)


def main() -> None:
    """Run the benchmark and print the median with min and max."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--child", choices=["jobs"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve_child(_drain)
        return
    results = [_one(args.runs, args.concurrency) for _ in range(args.repeat)]
    rates = spread(result["runs_per_second"] for result in results)
    summary = {
        "benchmark": "drain_noop_one_worker_with_history",
        "runs": args.runs,
        "repeat": args.repeat,
        "concurrency": args.concurrency,
        "runs_per_second": rates,
        "enqueue_seconds_median": spread(r["enqueue_seconds"] for r in results)["median"],
    }
    out = ROOT / "benchmarks" / "results" / "throughput.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{args.runs} no-op runs, 1 worker process, history in PostgreSQL: "
        f"median {rates['median']:.0f} runs/s "
        f"(min {rates['min']:.0f}, max {rates['max']:.0f}; {args.repeat} repetitions)"
    )


if __name__ == "__main__":
    main()
