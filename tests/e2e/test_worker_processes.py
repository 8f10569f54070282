"""`jobsctl worker --processes 2`: two consumers, two heartbeats, work shared."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import orjson
import redis

from tests.support.processes import jobsctl, started
from tests.support.services import redis_url

if TYPE_CHECKING:
    from pathlib import Path


def test_forked_worker_processes_each_have_their_own_consumer_and_heartbeat(
    tmp_path: Path, pg_url: str, redis_prefix: str
) -> None:
    prefix = f"{redis_prefix}-{uuid.uuid4().hex[:6]}"
    env = {"JOBS_DATABASE_URL": pg_url, "JOBS_REDIS_URL": redis_url(), "JOBS_REDIS_PREFIX": prefix}
    assert jobsctl("migrate", env=env).returncode == 0
    client = redis.Redis.from_url(redis_url())
    beats: list[dict[str, object]] = []
    try:
        with started("worker", "--processes", "2", env=env, log=tmp_path / "worker.log"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(beats) < 2:
                keys = list(client.scan_iter(match=f"{prefix}:workers:*"))
                beats = [orjson.loads(value) for value in client.mget(keys) if value]
                time.sleep(0.3)
    finally:
        client.close()
    assert len(beats) == 2, (tmp_path / "worker.log").read_text()[-2000:]
    assert len({beat["consumer"] for beat in beats}) == 2
    assert len({beat["pid"] for beat in beats}) == 2
    assert all(str(beat["consumer"]).startswith(f"{beat['host']}:{beat['pid']}:") for beat in beats)
