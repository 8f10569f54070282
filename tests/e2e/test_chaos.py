"""The failure suite in its short form: zero lost, zero duplicated, every scenario.

``make chaos`` runs the same scenarios at full size (200 runs each) and prints a table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.chaos.scenarios import SCENARIOS, Cluster, Row
from tests.support.redis_server import PrivateRedis
from tests.support.services import redis_url

if TYPE_CHECKING:
    from pathlib import Path

SIZE = 12


def _check(row: Row, submitted: int) -> None:
    assert row.submitted == submitted, row
    assert row.lost == 0, row
    assert row.duplicated == 0, row
    assert row.completed == submitted, row


@pytest.mark.parametrize("scenario", ["worker_sigkill", "long_task", "worker_sigterm"])
def test_no_work_is_lost_or_done_twice(tmp_path: Path, pg_url: str, scenario: str) -> None:
    row = SCENARIOS[scenario](Cluster(tmp_path, pg_url, redis_url()), SIZE)
    _check(row, SIZE * 2 if scenario == "worker_sigterm" else SIZE)


def test_a_redis_restart_loses_nothing(tmp_path: Path, pg_url: str) -> None:
    server = PrivateRedis(tmp_path, durable=True)
    server.start()
    try:
        row = SCENARIOS["redis_restart"](Cluster(tmp_path, pg_url, server.url), SIZE, server)
    finally:
        server.stop()
    _check(row, SIZE * 2)
