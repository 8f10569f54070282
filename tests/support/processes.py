"""Starting real ``jobsctl`` processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = ["ROOT", "free_port", "jobsctl", "started", "wait_for_http"]

ROOT = Path(__file__).resolve().parents[2]
JOBSCTL = [str(Path(sys.executable).with_name("jobsctl"))]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")}
    env.update({"PYTHONPATH": str(ROOT), "JOBS_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def jobsctl(
    *args: str, env: Mapping[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot jobsctl command to completion.

    A command still running after ``timeout`` (one that should have refused to start)
    is killed with every process it started, then ``TimeoutExpired`` is raised.
    """
    with subprocess.Popen(
        [*JOBSCTL, *args],
        env=_env(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@contextmanager
def started(
    *args: str,
    env: Mapping[str, str],
    log: Path,
    cwd: Path | None = None,
    command: list[str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a long-lived process for the block, then SIGTERM it (SIGKILL if it hangs)."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command or [*JOBSCTL, *args],
            env=_env(env),
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)


def wait_for_http(
    url: str,
    *,
    timeout: float = 30,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> httpx.Response:
    """Poll ``url`` until it answers 200; fail with the process log if it dies first."""
    deadline = time.monotonic() + timeout
    last: Exception | httpx.Response | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = log.read_text(errors="replace") if log else ""
            msg = f"process exited with {process.returncode} before {url} answered:\n{output}"
            raise AssertionError(msg)
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
            last = response
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    output = log.read_text(errors="replace") if log else ""
    msg = f"{url} did not answer 200 within {timeout} s (last: {last!r}):\n{output}"
    raise AssertionError(msg)
