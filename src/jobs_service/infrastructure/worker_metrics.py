"""Prometheus metrics of worker processes, added up across ``--processes N``.

TaskIQ's process manager forks the worker processes; each counts its own runs. In
Prometheus's multiprocess mode every process writes its values to files in one
directory and a collector adds them up at scrape time. The mode is chosen when
``prometheus_client`` is first imported, so ``jobsctl worker`` prepares the directory
before importing anything that creates metrics, and serves the sum from the supervising
process (which outlives its children) on ``worker.metrics_port``.
"""

from __future__ import annotations

import os
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
    return directory


def serve_worker_metrics(host: str, port: int, directory: Path) -> None:
    """Serve the metrics of every process writing to ``directory`` on ``host:port``, from
    a daemon thread of this process."""
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415
    from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)
