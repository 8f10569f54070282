"""Prometheus metrics of worker processes, added up across ``--processes N``.

TaskIQ's process manager forks the worker processes; each counts its own runs. In
Prometheus's multiprocess mode every process writes its values to files in one
directory and a collector adds them up at scrape time. The mode is chosen when
``prometheus_client`` is first imported, so ``jobsctl worker`` prepares the directory
before importing anything that creates metrics, and serves the sum from the supervising
process (which outlives its children) on ``worker.metrics_port``.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["prepare_multiprocess_metrics", "serve_worker_metrics"]

_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_metrics() -> Path:
    """Point this process and its children at a fresh metrics directory.

    An operator's ``PROMETHEUS_MULTIPROC_DIR`` is used, its metric files (``*.db``)
    of an earlier run removed first, as Prometheus requires; nothing else in it is
    touched, so a directory shared by mistake (``/tmp``) loses nothing but those.
    Otherwise a new temporary one.
    """
    configured = os.environ.get(_ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
    else:
        directory = Path(tempfile.mkdtemp(prefix="jobs-worker-metrics-"))
        os.environ[_ENV] = str(directory)
        atexit.register(_remove_when_this_process_exits, directory, os.getpid())
    return directory


def _remove_when_this_process_exits(directory: Path, owner: int) -> None:
    """Remove the directory this process created, when it (not a forked child, which
    inherits the hook) exits: each worker start used to leave one behind in /tmp."""
    if os.getpid() != owner:
        return
    # The worker processes may still be finishing their runs (and writing metrics):
    # wait for them first, whatever order the exit hooks run in.
    for child in multiprocessing.active_children():
        child.join()
    shutil.rmtree(directory, ignore_errors=True)


def serve_worker_metrics(host: str, port: int, directory: Path) -> None:
    """Serve the metrics of every process writing to ``directory`` on ``host:port``, from
    a daemon thread of this process."""
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415
    from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    server, _ = start_http_server(port, addr=host, registry=registry)
    # The worker processes are forked after this: without closing their copy of the
    # listening socket, a child outliving a killed supervisor kept the port (scrapes
    # hung, a restarted worker could not serve metrics).
    os.register_at_fork(after_in_child=server.socket.close)
