"""Issue 7's targets applied to the workloads' results, and the table that shows them.

Each workload's result (the dict its ``measure`` returns) becomes one or more
:class:`Row`: what Jobs Service measured, the in-run baseline it is compared with, the
threshold, and a verdict — PASS / FAIL for a target, INFO for a figure the issue only
asks to report, ERROR / SKIPPED when the workload did not produce a result. Verdicts
compare medians across repetitions; min-max ranges are shown beside them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["Row", "markdown_table", "rows_for", "text_table"]


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table."""

    target: str
    measured: str
    baseline: str
    threshold: str
    verdict: str

    def as_json(self) -> dict[str, str]:
        """The row as plain data for ``latest.json``."""
        return asdict(self)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _range(stats: dict[str, float], fmt: str, unit: str = "") -> str:
    """``median (min-max) unit``; just the median when there was one repetition."""
    median = format(stats["median"], fmt)
    if stats["min"] == stats["max"]:
        return f"{median}{unit}"
    return f"{median}{unit} ({format(stats['min'], fmt)}-{format(stats['max'], fmt)})"


def _w1(result: dict[str, Any]) -> list[Row]:
    taskiq, jobs = result["contestants"]["taskiq"], result["contestants"]["jobs"]
    ratio = result["ratio_jobs_to_taskiq"]["recorded"]
    return [
        Row(
            f"W1 throughput, {result['runs']:,} runs",
            f"{_range(jobs['recorded_runs_per_second'], ',.0f', ' runs/s')} recorded "
            f"succeeded = {ratio:.2f}x TaskIQ",
            f"TaskIQ {_range(taskiq['runs_per_second'], ',.0f', ' runs/s')}",
            f"≥ {result['target_ratio']:.1f}x TaskIQ",
            _verdict(result["pass"]),
        )
    ]


def _w2(result: dict[str, Any]) -> list[Row]:
    taskiq, jobs = result["contestants"]["taskiq"], result["contestants"]["jobs"]
    return [
        Row(
            f"W2 enqueue-to-start p99, {result['rate']:.0f}/s for {result['seconds']:.0f} s",
            f"{_range(jobs['p99_ms'], '.1f', ' ms')} (p50 {jobs['p50_ms']['median']:.1f} ms; "
            f"enqueue call p99 {jobs['producer_call_p99_ms']['median']:.1f} ms)",
            f"TaskIQ {_range(taskiq['p99_ms'], '.1f', ' ms')} "
            f"(p50 {taskiq['p50_ms']['median']:.1f} ms)",
            "≤ TaskIQ p99",
            _verdict(result["pass"]),
        )
    ]


def _w3(result: dict[str, Any]) -> list[Row]:
    taskiq, jobs = result["contestants"]["taskiq"], result["contestants"]["jobs"]
    return [
        Row(
            f"W3 drain, {result['runs']:,} x sleep {result['sleep_s'] * 1000:.0f} ms, "
            f"{result['concurrency']} slots",
            f"{_range(jobs['seconds'], '.2f', ' s')}{_cpu(jobs)}",
            f"TaskIQ {_range(taskiq['seconds'], '.2f', ' s')} (reference){_cpu(taskiq)}",
            f"≤ {result['target_seconds']:.2f} s (ideal {result['ideal_seconds']:.2f} s)",
            _verdict(result["pass"]),
        )
    ]


def _cpu(contestant: dict[str, Any]) -> str:
    """`` (worker N µs/run)``, when the result has it (results before it was measured
    do not)."""
    cpu = contestant.get("worker_cpu_us_per_run")
    return "" if cpu is None else f" (worker {cpu['median']:,.0f} µs/run)"


def _w4(result: dict[str, Any]) -> list[Row]:
    jobs, bare = result["jobs"], result["bare"]
    return [
        Row(
            f"W4 webhook requests/s ({result['load_generator']})",
            f"{_range(jobs['requests_per_s'], ',.0f', ' req/s')} = "
            f"{result['ratio_to_bare']:.0%} of bare",
            f"bare FastAPI {_range(bare['requests_per_s'], ',.0f', ' req/s')}",
            f"≥ {result['target_ratio']:.0%} of bare",
            _verdict(result["ratio_to_bare"] >= result["target_ratio"]),
        ),
        Row(
            "W4 webhook p99",
            _range(jobs["p99_ms"], ".1f", " ms"),
            f"bare FastAPI {_range(bare['p99_ms'], '.1f', ' ms')}",
            f"≤ {result['target_p99_ms']:.0f} ms",
            _verdict(jobs["p99_ms"]["median"] <= result["target_p99_ms"]),
        ),
        Row(
            "W4 events lost",
            f"{result['lost']} of {result['accepted']:,} accepted "
            f"({result['other_status']} non-202 answers)",
            "—",
            "0",
            _verdict(result["lost"] == 0),
        ),
    ]


def _w5(result: dict[str, Any]) -> list[Row]:
    return [
        Row(
            f"W5 fire lateness p99, {result['schedules']} x 1 s for {result['seconds']:.0f} s",
            f"{_range(result['lateness_p99_ms'], '.1f', ' ms')} "
            f"(p50 {result['lateness_p50_ms']['median']:.1f} ms, "
            f"{result['fires']['median']:.0f} fires)",
            "—",
            f"≤ {result['target_p99_ms']:.0f} ms",
            _verdict(result["lateness_p99_ms"]["median"] <= result["target_p99_ms"]),
        ),
        Row(
            "W5 duplicate fires",
            str(result["duplicate_fires"]),
            "—",
            "0",
            _verdict(result["duplicate_fires"] == 0),
        ),
    ]


def _footprint(result: dict[str, Any]) -> list[Row]:
    imports = result["gateway_msgraph_imports"]
    return [
        Row(
            "idle worker RSS (worker child process)",
            _range(result["worker_rss_mib"], ".0f", " MiB"),
            f"supervisor {_range(result['worker_supervisor_rss_mib'], '.0f', ' MiB')}",
            "reported",
            "INFO",
        ),
        Row(
            "gateway RSS (`jobsctl api`, after serving)",
            _range(result["gateway_rss_mib"], ".0f", " MiB"),
            f"ready in {result['api_ready_seconds']['median']:.1f} s",
            "reported",
            "INFO",
        ),
        Row(
            "gateway never imports msgraph",
            "no msgraph import" if not imports else f"imported {', '.join(imports[:3])}",
            "—",
            "no import",
            _verdict(result["gateway_msgraph_free"]),
        ),
        Row(
            "`jobsctl run` ready (/health 200)",
            _range(result["embedded_ready_seconds"], ".2f", " s"),
            f"first start {result['embedded_first_start_seconds']:.2f} s, "
            f"RSS {result['embedded_rss_mib']['median']:.0f} MiB",
            f"≤ {result['ready_target_seconds']:.0f} s",
            _verdict(result["embedded_ready_seconds"]["median"] <= result["ready_target_seconds"]),
        ),
    ]


def _worker_import(result: dict[str, Any]) -> list[Row]:
    plain, graph = result["plain"], result["graph"]
    return [
        Row(
            "worker import (no Graph call)",
            f"{plain['import_s']:.2f} s, peak RSS {plain['max_rss_mib']:.0f} MiB, "
            f"msgraph {'loaded' if plain['msgraph_loaded'] else 'not loaded'}",
            f"first Graph call {graph['first_call_s']:.2f} s, "
            f"peak RSS {graph['max_rss_mib']:.0f} MiB",
            "reported",
            "INFO",
        )
    ]


_ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "w1": _w1,
    "w2": _w2,
    "w3": _w3,
    "w4": _w4,
    "w5": _w5,
    "footprint": _footprint,
    "worker_import": _worker_import,
}


def rows_for(key: str, title: str, outcome: dict[str, Any]) -> list[Row]:
    """The rows of one workload's ``outcome`` (``status`` ok / error / skipped)."""
    if outcome["status"] == "ok":
        return _ROWS[key](outcome["result"])
    verdict = "ERROR" if outcome["status"] == "error" else "SKIPPED"
    reason = outcome.get("reason", "")
    first = reason.strip().splitlines()[0] if reason.strip() else ""
    return [Row(title, first[:120], "—", "—", verdict)]


def text_table(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width table for the terminal."""
    header = Row("target", "Jobs Service", "in-run baseline", "threshold", "verdict")
    table = [(r.target, r.measured, r.baseline, r.threshold) for r in (header, *rows)]
    widths = [max(len(cells[index]) for cells in table) for index in range(4)]

    def line(row: Row) -> str:
        cells = (row.target, row.measured, row.baseline, row.threshold)
        padded = "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return f"{padded}  {row.verdict}"

    rule = "-" * (sum(widths) + 2 * len(widths) + len("verdict"))
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| target | Jobs Service | in-run baseline | threshold | verdict |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = (row.target, row.measured, row.baseline, row.threshold, f"**{row.verdict}**")
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)
