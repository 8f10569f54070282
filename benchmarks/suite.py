"""Issue 7's benchmark suite (``make bench``): W1-W5 and the footprint, each target
PASS/FAIL against the baselines measured in the same run.

Runs, in order, W1 throughput, W2 latency and W3 concurrency (each also for plain
TaskIQ), W4 webhook ingestion (also for a bare FastAPI endpoint), W5 scheduler
precision, the footprint and the worker's import cost — 3 repetitions each, against the
machine's Redis and PostgreSQL (every contestant its own database and key prefix). Each
workload runs in a fresh interpreter with a time limit, all of them within one budget
(20 min by default), so a hung workload is stopped (SIGINT: it cleans up) and reported
ERROR while the others still run; when the budget is spent the rest are SKIPPED.

Prints the table and writes ``benchmarks/results/latest.json`` (every figure) and
``benchmarks/results/latest.md`` (the table) after a full run (every workload, three
repetitions, none failed to run); any other run writes ``scratch.json`` and
``scratch.md`` instead (not tracked),
so it never replaces the results the docs describe. Exit status 1 if a workload failed to
produce a result (or, with ``--strict``, if any target failed). Usage:

    uv run python -m benchmarks.suite                # the full suite
    uv run python -m benchmarks.suite --quick        # smoke run: small sizes, 1 repetition
    uv run python -m benchmarks.suite --only w2,w3   # some workloads

``make bench`` runs it; ``make bench BENCH_QUICK=1`` the quick mode, ``BENCH_ONLY=w2,w3``
some workloads.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from benchmarks.figures import machine, spread
from benchmarks.processes import ROOT, parse_result, print_result, run_module
from benchmarks.verdicts import Row, markdown_table, rows_for, text_table

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["WORKLOADS", "main", "measure_webhooks"]

RESULTS = ROOT / "benchmarks" / "results"
BUDGET_S = 20 * 60.0
MIN_START_S = 30.0  # a workload is not started with less time than this left
FULL_REPEAT = 3  # repetitions of a full run: only such a run replaces latest.*
W4_TARGET_RATIO = 0.5  # issue 7, W4: requests/s >= 50% of the bare endpoint
W4_TARGET_P99_MS = 50.0  # and p99 <= 50 ms


@dataclass(frozen=True, slots=True)
class Workload:
    """One entry of the suite: what to call, with which arguments, within what time."""

    key: str
    title: str
    function: str  # "module:function", returning a JSON-able dict
    full: dict[str, Any]
    quick: dict[str, Any]
    limit_s: float
    quick_limit_s: float = 240.0


WORKLOADS = (
    Workload(
        "w1",
        "W1 throughput",
        "benchmarks.w1_baseline:measure",
        {"runs": 20_000, "with_machine": False},
        {"runs": 2_000, "with_machine": False},
        limit_s=480,
    ),
    Workload(
        "w2",
        "W2 latency",
        "benchmarks.w2_latency:measure",
        {"rate": 500, "seconds": 10},
        {"rate": 500, "seconds": 2},
        limit_s=300,
    ),
    Workload(
        "w3",
        "W3 concurrency",
        "benchmarks.w3_concurrency:measure",
        {"runs": 2_000},
        {"runs": 2_000},
        limit_s=240,
    ),
    Workload(
        "w4",
        "W4 webhook ingestion",
        "benchmarks.suite:measure_webhooks",
        {"seconds": 10, "httpx_requests": 3_000},
        {"seconds": 3, "httpx_requests": 600},
        limit_s=300,
    ),
    Workload(
        "w5",
        "W5 scheduler precision",
        "benchmarks.scheduler_precision:measure",
        {"schedules": 50, "seconds": 30},
        {"schedules": 10, "seconds": 5},
        limit_s=300,
    ),
    Workload("footprint", "footprint", "benchmarks.footprint:measure", {}, {}, limit_s=240),
    Workload(
        "worker_import",
        "worker import",
        "benchmarks.worker_footprint:measure",
        {},
        {},
        limit_s=180,
    ),
)


# ------------------------------------------------------------------------- W4


def load_generator() -> str:
    """What drives W4: ``wrk`` when installed, else the asyncio (httpx) client."""
    return "wrk" if shutil.which("wrk") else "asyncio httpx client"


def measure_webhooks(*, seconds: int, httpx_requests: int, repeat: int) -> dict[str, Any]:
    """W4: :func:`benchmarks.webhook_ingestion.measure` ``repeat`` times, summarised.

    ``wrk`` runs ``seconds`` per server; without it the httpx client sends
    ``httpx_requests`` requests per server instead (it would otherwise send the
    ``seconds x 6000`` distinct requests prepared for ``wrk``).
    """
    from benchmarks.webhook_ingestion import measure  # noqa: PLC0415 - only in this child

    generator = load_generator()
    requests = None if generator == "wrk" else httpx_requests
    if requests is not None:
        print(
            "W4: wrk is not installed (Debian/Ubuntu: apt-get install wrk); the asyncio "
            "client drives the load and limits both servers, so W4's requests/s and p99 "
            "are the client's, not a measurement of either server",
            flush=True,
        )
    runs = []
    for index in range(repeat):
        runs.append(measure(seconds=seconds, requests=requests))
        jobs = runs[-1]["results"]["jobs_service"]
        print(
            f"W4 repetition {index + 1}/{repeat}: gateway {jobs['requests_per_s']:.0f} req/s "
            f"p99 {jobs['p99_ms']:.1f} ms, bare "
            f"{runs[-1]['results']['bare_fastapi']['requests_per_s']:.0f} req/s, "
            f"lost {jobs['lost']}",
            file=sys.stderr,
            flush=True,
        )

    def figures(label: str) -> dict[str, Any]:
        results = [run["results"][label] for run in runs]
        return {
            "requests_per_s": spread(r["requests_per_s"] for r in results),
            "p50_ms": spread(r["p50_ms"] for r in results),
            "p99_ms": spread(r["p99_ms"] for r in results),
        }

    jobs, bare = figures("jobs_service"), figures("bare_fastapi")
    gateway = [run["results"]["jobs_service"] for run in runs]
    ratio = jobs["requests_per_s"]["median"] / bare["requests_per_s"]["median"]
    lost = sum(int(r["lost"]) for r in gateway)
    return {
        "benchmark": "w4_webhook_ingestion",
        "load_generator": generator,
        "seconds": seconds,
        "requests": requests,
        "repeat": repeat,
        "jobs": jobs,
        "bare": bare,
        "ratio_to_bare": ratio,
        "accepted": sum(int(r.get("accepted", 0)) for r in gateway),
        "other_status": sum(int(r.get("other_status", 0)) for r in gateway),
        "lost": lost,
        "target_ratio": W4_TARGET_RATIO,
        "target_p99_ms": W4_TARGET_P99_MS,
        "pass": ratio >= W4_TARGET_RATIO
        and jobs["p99_ms"]["median"] <= W4_TARGET_P99_MS
        and lost == 0,
        "repetitions": runs,
    }


# ------------------------------------------------------------------ running


def _call(function: str, arguments: dict[str, Any]) -> None:
    """Child side: call ``module:function`` with ``arguments``, print its result.

    Anything the workload prints goes to stderr, so stdout carries only the result.
    """
    module, name = function.split(":")
    target = getattr(importlib.import_module(module), name)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = target(**arguments)
    except KeyboardInterrupt:  # the suite's time limit: cleaned up, nothing to report
        sys.exit(130)
    print_result(result)


def _run(workload: Workload, arguments: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run one workload in a fresh interpreter; its outcome (never raises)."""
    began = time.perf_counter()
    print(f"\n== {workload.title} (limit {timeout_s:.0f} s)", file=sys.stderr, flush=True)
    try:
        out = run_module(
            ["-m", "benchmarks.suite", "--call", workload.function],
            env={},
            stdin=json.dumps(arguments),
            timeout_s=timeout_s,
        )
        outcome: dict[str, Any] = {"status": "ok", "result": parse_result(out)}
    except (RuntimeError, TimeoutError) as exc:
        outcome = {"status": "error", "reason": str(exc)}
    outcome["seconds"] = time.perf_counter() - began
    outcome["arguments"] = arguments
    return outcome


@contextlib.contextmanager
def _bytecode_cache() -> Iterator[None]:
    """Let every process of the suite cache bytecode in a temporary directory.

    Workers and servers start dozens of times; where the environment forbids bytecode
    files (``PYTHONDONTWRITEBYTECODE``, as in this sandbox) each start would compile
    every imported module again. Nothing measured runs before a worker is warm, and
    ``jobsctl run``'s readiness is meant on a warm machine, so the cache changes start-up
    only. Kept outside the checkout and the virtual environment; removed afterwards.
    """
    saved = {key: os.environ.get(key) for key in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    with tempfile.TemporaryDirectory(prefix="bench-bytecode-") as tmp:
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = tmp
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def results_name(*, quick: bool, selected: list[str], repeat: int, rows: list[Row]) -> str:
    """``latest`` for a full run (every workload, three repetitions, each produced a
    result), which replaces the kept results docs/performance.md describes; ``scratch``
    (not tracked) for any other."""
    full = (
        not quick
        and set(selected) == {w.key for w in WORKLOADS}
        and repeat == FULL_REPEAT
        and all(row.verdict not in ("ERROR", "SKIPPED") for row in rows)
    )
    return "latest" if full else "scratch"


def _write(summary: dict[str, Any], rows: list[Row], name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    host = summary["machine"]
    lines = [
        f"# Benchmarks — {'QUICK (smoke) run' if summary['quick'] else 'full run'}",
        "",
        f"{summary['finished_at']}, {summary['wall_seconds']:.0f} s; "
        f"{host['cpus']} CPUs, {host['platform']}, Python {host['python']}, "
        f"Redis {host['servers']['redis']}, PostgreSQL {host['servers']['postgresql']}; "
        f"taskiq {host['packages']['taskiq']}, taskiq-redis {host['packages']['taskiq-redis']}.",
        f"Repetitions: {summary['repeat']} per workload (median, min-max). "
        f"W4 load generator: {summary['load_generator']}. Python bytecode was cached "
        "(in a temporary `PYTHONPYCACHEPREFIX`) for every process started.",
        "",
        markdown_table(rows),
        "",
        f"Every figure: `benchmarks/results/{name}.json`. How each workload measures: "
        "the docstrings of `benchmarks/w1_baseline.py`, `w2_latency.py`, `w3_concurrency.py`, "
        "`webhook_ingestion.py`, `scheduler_precision.py`, `footprint.py`.",
        "",
    ]
    if summary["quick"]:
        lines[2:2] = [
            "Quick mode: smaller sizes and one repetition, to check the harness — "
            "not the issue's measurement.",
            "",
        ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))


def main() -> None:
    """Run the selected workloads within the budget; print and write the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--repeat", type=int, help="repetitions (default 3, quick 1)")
    parser.add_argument(
        "--only", help="comma-separated workloads: " + ",".join(w.key for w in WORKLOADS)
    )
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for everything")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--call", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.call:
        _call(args.call, json.loads(sys.stdin.read()))
        return

    selected = [w.key for w in WORKLOADS]
    if args.only:
        selected = [key.strip() for key in args.only.split(",") if key.strip()]
        unknown = sorted(set(selected) - {w.key for w in WORKLOADS})
        if unknown:
            parser.error(f"unknown workload(s): {', '.join(unknown)}")
    repeat = args.repeat or (1 if args.quick else FULL_REPEAT)
    began = time.perf_counter()
    deadline = began + args.budget
    outcomes: dict[str, dict[str, Any]] = {}
    rows: list[Row] = []
    with _bytecode_cache():
        for workload in WORKLOADS:
            if workload.key not in selected:
                continue
            arguments = {**(workload.quick if args.quick else workload.full), "repeat": repeat}
            left = deadline - time.perf_counter()
            limit = min(workload.quick_limit_s if args.quick else workload.limit_s, left)
            if limit < MIN_START_S:
                outcome = {"status": "skipped", "reason": "the suite's time budget is spent"}
            else:
                outcome = _run(workload, arguments, limit)
            outcomes[workload.key] = outcome
            rows += rows_for(workload.key, workload.title, outcome)

    summary = {
        "suite": "issue 7 targets",
        "quick": args.quick,
        "repeat": repeat,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - began,
        "budget_seconds": args.budget,
        "load_generator": load_generator(),
        "machine": machine(),
        "targets": [row.as_json() for row in rows],
        "pass": all(row.verdict in ("PASS", "INFO") for row in rows),
        "workloads": outcomes,
    }
    name = results_name(quick=args.quick, selected=selected, repeat=repeat, rows=rows)
    _write(summary, rows, name)
    mode = "QUICK (smoke) run, not the issue's measurement" if args.quick else "full run"
    print(f"\nIssue 7 targets — {mode}; {repeat} repetition(s), median (min-max):\n")
    print(text_table(rows))
    print(
        f"\nW4 load generator: {summary['load_generator']}. "
        f"Wrote benchmarks/results/{name}.json and {name}.md ({summary['wall_seconds']:.0f} s)."
    )
    errors = [row for row in rows if row.verdict in ("ERROR", "SKIPPED")]
    failed = [row for row in rows if row.verdict == "FAIL"]
    if errors or (args.strict and failed):
        sys.exit(1)


if __name__ == "__main__":
    main()
