"""Processes the benchmarks start: workers, servers and measurement children.

Two rules hold for every process started here, so a benchmark that fails, times out or
is interrupted leaves nothing running:

* a long-lived process (a worker, a server) gets its own session, so it can be stopped
  as a whole with its children, and ``PR_SET_PDEATHSIG``: if the process that started
  it dies without stopping it, the kernel sends it SIGTERM;
* a measurement child (a fresh interpreter per workload and per contestant, because
  ``jobs_service`` reads its settings at import) gets a timeout and a process group of
  its own; on timeout or interruption the group gets SIGINT first, so the ``finally``
  blocks stop workers and drop databases, and SIGKILL only after a minute.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping

    from redis.asyncio import Redis

__all__ = [
    "ROOT",
    "executable",
    "free_port",
    "parse_result",
    "print_result",
    "process_children",
    "rss_mib",
    "run_child",
    "run_module",
    "serve_child",
    "start_process",
    "stop_process",
    "wait_for_counter",
    "wait_for_http",
    "worker_child",
]

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.005  # counter polling: one GET every 5 ms, far below any drain's resolution
_PR_SET_PDEATHSIG = 1
_GRACE_S = 60.0  # how long an interrupted child may take to clean up before SIGKILL
_RESULT = "BENCH-RESULT "


def executable(name: str) -> str:
    """A console script of this virtual environment (``jobsctl``, ``taskiq``)."""
    return str(Path(sys.executable).with_name(name))


def _die_with_parent() -> None:
    """Runs in the forked child before exec: SIGTERM when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_process(
    command: list[str],
    env: dict[str, str],
    log: Path,
    *,
    cwd: Path = ROOT,
    base_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived process in its own session, output to ``log``.

    ``env`` is added to ``base_env`` (default: this process's environment) with the
    repository on ``PYTHONPATH`` unless ``env`` sets it, so benchmark modules import
    everywhere.
    """
    base = os.environ if base_env is None else base_env
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env={**base, "PYTHONPATH": str(ROOT), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads exist at this point
        )


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """SIGTERM the process's session, SIGKILL it if it has not ended in ``timeout_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


async def wait_for_counter(redis: Redis, key: str, target: int, timeout_s: float) -> float:
    """Poll ``key`` until it reaches ``target``; the ``perf_counter`` when it did."""
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


def wait_for_http(
    url: str, *, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> float:
    """Poll ``url`` every 10 ms until it answers 200; the ``perf_counter`` when it did.

    Raises ``RuntimeError`` if ``process`` ends first, ``TimeoutError`` after
    ``timeout_s``.
    """
    deadline = time.perf_counter() + timeout_s
    with httpx.Client(timeout=1.0) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return time.perf_counter()
            if process is not None and process.poll() is not None:
                msg = f"{url}: the server exited ({process.returncode}) before answering"
                raise RuntimeError(msg)
            if time.perf_counter() > deadline:
                msg = f"{url} did not answer 200 within {timeout_s:.0f} s"
                raise TimeoutError(msg)
            time.sleep(0.01)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` now (``VmRSS`` of ``/proc/<pid>/status``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    msg = f"no VmRSS for process {pid}"
    raise RuntimeError(msg)


def worker_child(worker: subprocess.Popen[bytes]) -> int:
    """The one worker process a supervisor (``taskiq worker``, ``jobsctl worker``) runs."""
    children = process_children(worker.pid)
    if len(children) != 1:
        msg = f"expected one worker process under {worker.pid}, found {children}"
        raise RuntimeError(msg)
    return children[0]


def process_children(pid: int) -> list[int]:
    """Direct children of ``pid``, from every process's ``/proc/<n>/stat``."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The name in parentheses may hold spaces: the fields after its ")" are fixed.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            children.append(int(entry.name))
    return sorted(children)


# ------------------------------------------------------------ measurement children


def run_module(
    arguments: list[str], *, env: dict[str, str], stdin: str = "", timeout_s: float
) -> str:
    """Run ``python <arguments>``; its stdout. SIGINT after ``timeout_s``, then SIGKILL.

    The child gets a process group of its own (as do the children it starts through
    this function, each in theirs). On timeout, or when this process is interrupted,
    its group gets one SIGINT, and it passes the interruption on the same way, so each
    process runs its ``finally`` blocks (stopping workers, dropping databases) before
    exiting; a process group rather than the terminal's, so Ctrl-C reaches each of them
    exactly once. Its stderr goes through to ours as it comes (progress lines) and its
    tail is kept for the error when the run fails.
    """
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [sys.executable, *arguments],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=write_end,
        text=True,
        process_group=0,
    )
    os.close(write_end)
    tail: collections.deque[str] = collections.deque(maxlen=60)
    relay = threading.Thread(target=_relay, args=(read_end, tail), daemon=True)
    relay.start()
    try:
        out, _ = child.communicate(stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _interrupt(child)
        msg = f"python {' '.join(arguments)} timed out after {timeout_s:.0f} s"
        raise TimeoutError(msg) from None
    except BaseException:
        _interrupt(child)
        raise
    finally:
        relay.join(timeout=5)
    if child.returncode != 0:
        text = "".join(tail)
        msg = f"python {' '.join(arguments)} failed ({child.returncode}):\n{text}"
        raise RuntimeError(msg)
    return out


def _relay(fd: int, tail: collections.deque[str]) -> None:
    """Copy a child's stderr to ours line by line, keeping the last lines."""
    with os.fdopen(fd, errors="replace") as stream:
        for line in stream:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line)


def _interrupt(child: subprocess.Popen[str]) -> None:
    """One SIGINT to the child's process group; SIGKILL if it is not done in a minute."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGINT)
    try:
        child.communicate(timeout=_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.communicate()


def run_child(
    module: str, contestant: str, config: dict[str, Any], env: dict[str, str], timeout_s: float
) -> dict[str, Any]:
    """Run ``python -m module --child contestant`` with ``config`` (plus a ``log`` path
    for its worker) on stdin; the object it returns (:func:`serve_child`).

    On failure the error carries the tail of the worker's log.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        log = Path(tmp) / "worker.log"
        try:
            out = run_module(
                ["-m", module, "--child", contestant],
                env=env,
                stdin=json.dumps({**config, "log": str(log)}),
                timeout_s=timeout_s,
            )
        except (RuntimeError, TimeoutError) as exc:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            msg = f"{module} {contestant}: {exc}\nworker log tail:\n{tail}"
            raise type(exc)(msg) from None
    return parse_result(out)


def parse_result(out: str) -> dict[str, Any]:
    """The object a child printed with :func:`print_result` (its last one)."""
    for line in reversed(out.splitlines()):
        if line.startswith(_RESULT):
            return dict(json.loads(line[len(_RESULT) :]))
    msg = f"no result line in the child's output: {out[-500:]!r}"
    raise RuntimeError(msg)


def print_result(result: dict[str, Any]) -> None:
    """Write ``result`` as the marked line :func:`parse_result` finds among any other
    output a child or its own children (which share its stdout) may have written."""
    sys.stdout.write(f"{_RESULT}{json.dumps(result)}\n")
    sys.stdout.flush()


def serve_child(measure: Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]) -> None:
    """The child side of :func:`run_child`: config from stdin, result as a JSON line."""
    config = json.loads(sys.stdin.read())
    try:
        result = asyncio.run(measure(config))
    except KeyboardInterrupt:  # the parent's timeout: cleaned up, nothing to report
        sys.exit(130)
    print_result(result)
