"""The worker's Prometheus multiprocess directory: fresh files, nothing else touched."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jobs_service.infrastructure.worker_metrics import prepare_multiprocess_metrics
from tests.support.processes import free_port


def test_a_configured_directory_loses_its_old_metric_files_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's PROMETHEUS_MULTIPROC_DIR pointed at a shared directory by mistake:
    the last run's ``*.db`` files go (Prometheus needs them gone), everything else
    stays. (It used to be deleted whole.)"""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "counter_4242.db").write_bytes(b"old")
    (shared / "notes.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    assert prepare_multiprocess_metrics() == shared
    assert sorted(path.name for path in shared.iterdir()) == ["notes.txt"]


def test_a_missing_configured_directory_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = tmp_path / "metrics" / "worker-1"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(wanted))
    assert prepare_multiprocess_metrics() == wanted
    assert wanted.is_dir()


def test_without_one_a_fresh_temporary_directory_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # Set, then removed: monkeypatch then restores the variable's first state after the
    # test, including its absence (the call below sets it).
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "placeholder")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    directory = prepare_multiprocess_metrics()
    try:
        assert directory.is_dir()
        assert list(directory.iterdir()) == []
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
    finally:
        directory.rmdir()


_CHILD = """
import os, sys, time
from jobs_service.infrastructure.worker_metrics import (
    prepare_multiprocess_metrics, serve_worker_metrics,
)
directory = prepare_multiprocess_metrics()
serve_worker_metrics("127.0.0.1", int(sys.argv[1]), directory)
child = os.fork()
if child == 0:  # a worker process: it exits normally, running the inherited exit hooks
    sys.exit(0)
os.waitpid(child, 0)
print(directory, directory.is_dir(), flush=True)
grandchild = os.fork()
if grandchild == 0:  # a worker process outliving its supervisor
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # let the test read the supervisor's output to its end
    os.dup2(devnull, 2)
    time.sleep(30)
    os._exit(0)
print(grandchild, flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="worker processes are forked")
def test_the_supervisor_removes_its_directory_and_children_do_not_hold_the_port() -> None:
    """The temporary directory goes when the supervisor exits (not when a worker process
    does: they share it); a worker process outliving its supervisor no longer holds the
    metrics port, so a restarted worker can serve it."""
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": ""},
    )
    directory, alive_after_child, grandchild = result.stdout.split()
    try:
        assert alive_after_child == "True"
        assert not Path(directory).exists()
        os.kill(int(grandchild), 0)  # still alive
        with socket.socket() as probe:  # and yet the port is free
            probe.bind(("127.0.0.1", port))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(grandchild), signal.SIGKILL)
