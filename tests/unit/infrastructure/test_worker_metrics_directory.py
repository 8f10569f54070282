"""The worker's Prometheus multiprocess directory: fresh files, nothing else touched."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from jobs_service.infrastructure.worker_metrics import prepare_multiprocess_metrics

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


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
