"""Where a process's CPU goes during a measured window: its CPU time, and optionally a
py-spy sampling profile (``uv run python -m benchmarks.w1_baseline --profile DIR``, and
likewise ``benchmarks.w3_concurrency``).

py-spy (a dev dependency) attaches to the running process by pid, samples its Python
stacks without slowing it much, and writes one line per distinct stack with a count;
:func:`top_functions` folds those into the functions that were running (self) and the
ones on the stack (total), as percentages of the samples.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = ["cpu_seconds", "print_profiles", "profile_path", "sampled", "top_functions"]

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@contextlib.contextmanager
def sampled(pid: int, output: Path | None, rate_hz: int = 250) -> Iterator[None]:
    """Sample ``pid`` with py-spy for the block into ``output`` (raw, folded stacks);
    nothing when ``output`` is None or py-spy is not installed."""
    beside = Path(sys.executable).with_name("py-spy")  # this environment's, first
    binary = str(beside) if beside.exists() else shutil.which("py-spy")
    if output is None or binary is None:
        yield
        return
    command = [binary, "record", "--pid", str(pid), "--rate", str(rate_hz), "--nonblocking"]
    spy = subprocess.Popen(
        [*command, "--format", "raw", "--output", str(output), "--function"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()


def top_functions(raw: Path, count: int = 25) -> dict[str, list[tuple[str, float]]]:
    """The ``count`` functions with most samples, running ("self") and on the stack
    ("total"), as (function, percent of samples), from a py-spy raw profile."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        frames = stack.split(";")
        hits = int(number)
        samples += hits
        own[frames[-1]] += hits
        for frame in set(frames):
            total[frame] += hits
    if not samples:
        return {"self": [], "total": []}
    return {
        name: [
            (frame, round(100 * hits / samples, 1)) for frame, hits in counter.most_common(count)
        ]
        for name, counter in (("self", own), ("total", total))
    }


def profile_path(config: Mapping[str, object], name: str) -> Path | None:
    """Where a child writes the profile ``name`` (``config["profile"]``: the directory
    given with ``--profile``, or None for no profile)."""
    directory = config.get("profile")
    return Path(str(directory)) / f"{name}.raw" if directory else None


def print_profiles(directory: str, names: tuple[str, ...], window: str) -> None:
    """Print the functions running (self) in each profile ``names`` in ``directory``."""
    for name in names:
        raw = Path(directory) / f"{name}.raw"
        if not raw.exists():
            print(f"no profile {name} (is py-spy installed? `uv sync`)")
            continue
        print(f"\n{name}, functions running (self) during {window}:")
        for frame, percent in top_functions(raw)["self"]:
            print(f"  {percent:5.1f}%  {frame}")
