"""A starting ``jobsctl run`` fails the runs a stopped embedded process left, and only
those: while another process runs tasks on the same database file (``jobsctl enqueue``
runs its task in its own process), its runs are left to it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select, update

from jobs_service.broker import broker
from jobs_service.core.ids import new_run_id, process_name
from jobs_service.core.settings import DatabaseSettings
from jobs_service.gateway import create_app
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.embedded_lock import EmbeddedLock, process_gone
from jobs_service.infrastructure.models import JobRun
from jobs_service.infrastructure.repositories import runs
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def _seed(url: str) -> dict[str, str]:
    """One run in each state a sweep looks at; returns run_id by label."""
    database = Database(url, DatabaseSettings())
    await migrate.upgrade(database)
    host = socket.gethostname()
    workers = {
        "queued": None,
        "running-dead": f"{host}:{_dead_pid()}:0badf00d",
        "running-alive": process_name(),
        "retrying-dead": f"{host}:{_dead_pid()}:0badf00d",
        "running-other-host": "elsewhere:1:0badf00d",
    }
    ids = {label: new_run_id() for label in workers}
    earlier = datetime.now(UTC) - timedelta(minutes=1)
    async with database.engine.begin() as connection:
        await runs.insert_queued_runs(
            connection,
            [
                runs.QueuedRun(
                    run_id=run_id, task="count_items", kwargs={}, source="api", queued_at=earlier
                )
                for run_id in ids.values()
            ],
        )
        for label, worker in workers.items():
            if label != "queued":
                await connection.execute(
                    update(JobRun)
                    .where(JobRun.run_id == ids[label])
                    .values(status=label.split("-")[0], worker=worker, started_at=earlier)
                )
    await database.close()
    return ids


async def _statuses(url: str, ids: dict[str, str]) -> dict[str, str]:
    database = Database(url, DatabaseSettings())
    async with database.engine.connect() as connection:
        rows = (await connection.execute(select(JobRun.run_id, JobRun.status))).all()
    await database.close()
    by_id = dict(rows)
    return {label: by_id[run_id] for label, run_id in ids.items()}


async def test_with_another_process_on_the_file_only_runs_of_gone_processes_fail(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    ids = await _seed(settings.database_url)
    other = EmbeddedLock(settings.database_url)  # a `jobsctl enqueue` at work
    other.share()
    try:
        app = create_app(settings, broker=broker, embedded=True, scheduler=False)
        async with serve_app(app):
            pass
    finally:
        await other.aclose()
    assert await _statuses(settings.database_url, ids) == {
        "queued": "queued",
        "running-dead": "failed",
        "running-alive": "running",
        "retrying-dead": "failed",
        "running-other-host": "running",
    }


async def test_alone_on_the_file_every_unfinished_run_fails(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    ids = await _seed(settings.database_url)
    app = create_app(settings, broker=broker, embedded=True, scheduler=False)
    second = EmbeddedLock(settings.database_url)
    try:
        async with serve_app(app):
            # While it serves, it holds the file: a second `jobsctl run` is not alone.
            assert not second.take_alone()
        assert set((await _statuses(settings.database_url, ids)).values()) == {"failed"}
        assert second.take_alone()  # let go when it stopped
    finally:
        await second.aclose()


def test_process_gone_tells_dead_from_live_processes_of_this_host() -> None:
    host = socket.gethostname()
    assert process_gone(f"{host}:{_dead_pid()}:0badf00d")
    assert not process_gone(process_name())
    assert not process_gone(f"{host}:{os.getppid()}:0badf00d")
    # This process's pid under another name: an earlier process of a container
    # restarted in place, whose pid 1 is now this one's.
    assert process_gone(f"{host}:{os.getpid()}:0badf00d")
    assert not process_gone("elsewhere:1:0badf00d")
