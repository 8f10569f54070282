"""W2 latency, side by side: enqueue-to-start under a steady 500 tasks/s.

For each contestant a producer submits one run at each absolute deadline
``start + i / rate`` for ``seconds`` (deadlines, not sleeps between sends, so pacing does
not drift), the way an application submits work from concurrent requests: every submit
is its own asyncio task (at most 100 outstanding). Each run's kwargs carry
``sent_at = time.time()`` read immediately before the producer call, and the task body
(:func:`benchmarks.task_bodies.record_latency`, the same for both) appends
``time.time() - sent_at`` to a Redis list first thing when it starts. So the latency
includes the producer call itself (for Jobs: validation, the ``queued`` row in
PostgreSQL, the XADD), the queue, the worker's fetch and its middlewares up to the task
body — what an application waits before its work starts.

* plain TaskIQ: ``record_latency.kiq()``, drained by ``taskiq worker
  benchmarks.plain_taskiq_app:broker --workers 1 --max-async-tasks 100``;
* Jobs Service: ``JobsClient.enqueue`` (one run per call), drained by ``jobsctl worker
  --processes 1 --concurrency 100`` with the full middleware stack.

Each contestant gets a fresh worker per repetition, warmed up with one second of the
same paced load before the clock. Reports p50/p99/max in ms per repetition (median,
min-max across repetitions), the producer's own call time and how far pacing fell
behind. PASS when the median of Jobs' p99 is at most the median of TaskIQ's. Usage:

    uv run python -m benchmarks.w2_latency --rate 500 --seconds 10 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from benchmarks.contestants import (
    jobs_producer,
    jobs_resources,
    jobs_worker,
    taskiq_producer,
    taskiq_resources,
    taskiq_worker,
)
from benchmarks.figures import distribution, spread
from benchmarks.processes import run_child, serve_child, stop_process
from benchmarks.services import REDIS_URL

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["measure"]

IN_FLIGHT = 100  # outstanding submits at most: an application's concurrent requests
WAIT_TIMEOUT_S = 120.0


# ------------------------------------------------------------ producer (child side)


async def _pace(
    submit: Callable[[float], Awaitable[object]], rate: float, seconds: float
) -> dict[str, Any]:
    """Call ``submit(sent_at)`` at ``rate`` per second for ``seconds``."""
    loop = asyncio.get_running_loop()
    total = round(rate * seconds)
    slots = asyncio.Semaphore(IN_FLIGHT)
    call_s: list[float] = []
    behind_s: list[float] = []
    running: set[asyncio.Task[None]] = set()

    async def one() -> None:
        try:
            sent_at = time.time()
            began = time.perf_counter()
            await submit(sent_at)
            call_s.append(time.perf_counter() - began)
        finally:
            slots.release()

    start = loop.time() + 0.01
    for index in range(total):
        deadline = start + index / rate
        delay = deadline - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        behind_s.append(max(0.0, loop.time() - deadline))
        task = asyncio.create_task(one())
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)
    return {
        "sent": total,
        "sending_seconds": loop.time() - start,
        "producer_call_ms": distribution(call_s, scale=1000),
        "pacing_behind_ms": distribution(behind_s, scale=1000),
    }


async def _latencies(
    redis: Redis, key: str, expected: int, timeout_s: float = WAIT_TIMEOUT_S
) -> list[float]:
    """Wait until ``expected`` latencies are recorded under ``key``; return them."""
    deadline = time.perf_counter() + timeout_s
    while (count := await redis.llen(key)) < expected:
        if time.perf_counter() > deadline:
            msg = f"{count} of {expected} runs started after {timeout_s:.0f} s"
            raise TimeoutError(msg)
        await asyncio.sleep(0.05)
    return [float(value) for value in await redis.lrange(key, 0, -1)]


async def _measure_with(
    submit: Callable[[str, float], Awaitable[object]], prefix: str, config: dict[str, Any]
) -> dict[str, Any]:
    """Warm up with one second of the same load, then measure ``seconds`` of it."""
    rate, seconds = config["rate"], config["seconds"]
    redis = Redis.from_url(REDIS_URL)
    try:
        warm = f"{prefix}:warm-latency"
        sent = await _pace(lambda sent_at: submit(warm, sent_at), rate, min(1.0, seconds))
        await _latencies(redis, warm, sent["sent"])
        key = f"{prefix}:latency"
        producer = await _pace(lambda sent_at: submit(key, sent_at), rate, seconds)
        latency = distribution(await _latencies(redis, key, producer["sent"]), scale=1000)
    finally:
        await redis.aclose()
    return {
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "max_ms": latency["max"],
        "runs": latency["count"],
        **producer,
    }


async def _taskiq(config: dict[str, Any]) -> dict[str, Any]:
    async with taskiq_producer() as app:
        worker = taskiq_worker(Path(config["log"]), max_async_tasks=config["concurrency"])
        try:
            return await _measure_with(
                lambda key, sent_at: app.record_latency.kiq(key=key, sent_at=sent_at),
                app.PREFIX,
                config,
            )
        finally:
            stop_process(worker)


async def _jobs(config: dict[str, Any]) -> dict[str, Any]:
    async with jobs_producer() as jobs:
        worker = jobs_worker(Path(config["log"]), concurrency=config["concurrency"])
        try:
            return await _measure_with(
                lambda key, sent_at: jobs.client.enqueue(
                    "record_latency", {"key": key, "sent_at": sent_at}
                ),
                jobs.prefix,
                config,
            )
        finally:
            stop_process(worker)


_CHILDREN = {"taskiq": _taskiq, "jobs": _jobs}


# ------------------------------------------------------------------ orchestration


def _summary(repetitions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "p50_ms": spread(r["p50_ms"] for r in repetitions),
        "p99_ms": spread(r["p99_ms"] for r in repetitions),
        "max_ms": spread(r["max_ms"] for r in repetitions),
        "producer_call_p99_ms": spread(r["producer_call_ms"]["p99"] for r in repetitions),
        "pacing_behind_max_ms": spread(r["pacing_behind_ms"]["max"] for r in repetitions),
        "repetitions": repetitions,
    }


def measure(
    *, rate: float = 500, seconds: float = 10, repeat: int = 3, concurrency: int = 100
) -> dict[str, Any]:
    """Both contestants, ``repeat`` alternating repetitions; the summary as a dict."""
    config = {"rate": rate, "seconds": seconds, "concurrency": concurrency}
    child_timeout = 90 + 2 * seconds + WAIT_TIMEOUT_S
    taskiq: list[dict[str, Any]] = []
    jobs: list[dict[str, Any]] = []
    for index in range(repeat):
        with taskiq_resources("w2") as env:
            taskiq.append(run_child("benchmarks.w2_latency", "taskiq", config, env, child_timeout))
        with jobs_resources("w2") as env:
            jobs.append(run_child("benchmarks.w2_latency", "jobs", config, env, child_timeout))
        print(
            f"W2 repetition {index + 1}/{repeat}: enqueue-to-start p99 "
            f"TaskIQ {taskiq[-1]['p99_ms']:.1f} ms, Jobs {jobs[-1]['p99_ms']:.1f} ms "
            f"(p50 {taskiq[-1]['p50_ms']:.1f} / {jobs[-1]['p50_ms']:.1f} ms)",
            file=sys.stderr,
            flush=True,
        )
    summary = {"taskiq": _summary(taskiq), "jobs": _summary(jobs)}
    jobs_p99 = summary["jobs"]["p99_ms"]["median"]
    taskiq_p99 = summary["taskiq"]["p99_ms"]["median"]
    return {
        "benchmark": "w2_latency",
        "rate": rate,
        "seconds": seconds,
        "repeat": repeat,
        "concurrency": concurrency,
        "contestants": summary,
        "pass": jobs_p99 <= taskiq_p99,
    }


def main() -> None:
    """Measure, print the comparison as JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=500, help="runs submitted per second")
    parser.add_argument("--seconds", type=float, default=10, help="how long to submit")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per contestant")
    parser.add_argument("--concurrency", type=int, default=100, help="worker task slots")
    parser.add_argument("--child", choices=sorted(_CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve_child(_CHILDREN[args.child])
        return
    result = measure(
        rate=args.rate, seconds=args.seconds, repeat=args.repeat, concurrency=args.concurrency
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
