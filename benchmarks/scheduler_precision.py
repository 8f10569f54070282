"""Scheduler precision: N interval schedules at 1 s for D seconds, one scheduler process.

Reports how late each fire reached the broker (from the scheduler's ``schedule-fired``
lines) and checks that no fire time produced two runs. Usage:

    uv run python -m benchmarks.scheduler_precision --schedules 50 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

from benchmarks.services import REDIS_URL, clean_redis, create_database, drop_database

ROOT = Path(__file__).resolve().parents[1]


async def _setup(url: str, prefix: str, count: int) -> None:
    os.environ.update(
        {
            "JOBS_DATABASE_URL": url,
            "JOBS_REDIS_URL": REDIS_URL,
            "JOBS_REDIS_PREFIX": prefix,
            "JOBS_TASK_MODULES": "benchmarks.tasks",
        }
    )
    from jobs_service.broker import broker  # noqa: PLC0415
    from jobs_service.client import JobsClient  # noqa: PLC0415
    from jobs_service.core.settings import Settings  # noqa: PLC0415
    from jobs_service.infrastructure import migrate  # noqa: PLC0415
    from jobs_service.infrastructure.runtime import Runtime  # noqa: PLC0415
    from jobs_service.scheduler.service import ScheduleService  # noqa: PLC0415
    from jobs_service.scheduler.specs import ScheduleDraft  # noqa: PLC0415

    runtime = Runtime(Settings.load())
    await migrate.upgrade(runtime.database)
    service = ScheduleService(runtime.database, JobsClient(broker, runtime))
    for index in range(count):
        await service.create(
            ScheduleDraft.model_validate(
                {
                    "name": f"tick-{index}",
                    "task": "do_nothing",
                    "overlap": "allow",
                    "schedule": {"type": "interval", "seconds": 1},
                }
            ),
            created_by="bench",
        )
    await runtime.stop()


async def _duplicates(url: str) -> tuple[int, int]:
    from jobs_service.core.settings import DatabaseSettings  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415
    from jobs_service.infrastructure.models import JobRun  # noqa: PLC0415

    database = Database(url, DatabaseSettings())
    async with database.sessions() as session:
        runs = (
            await session.execute(
                select(func.count()).select_from(JobRun).where(JobRun.source == "schedule")
            )
        ).scalar_one()
        distinct = (
            await session.execute(
                select(func.count()).select_from(
                    select(JobRun.schedule_id, JobRun.scheduled_for)
                    .where(JobRun.source == "schedule")
                    .distinct()
                    .subquery()
                )
            )
        ).scalar_one()
    await database.close()
    return int(runs), int(runs - distinct)


def main() -> None:
    """Run the measurement and print lateness percentiles."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--schedules", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    name = f"jobs_bench_{uuid.uuid4().hex[:8]}"
    prefix = f"jobs-bench-{uuid.uuid4().hex[:8]}"
    url = asyncio.run(create_database(name))
    try:
        code = (
            f"import asyncio; from benchmarks.scheduler_precision import _setup; "
            f"asyncio.run(_setup({url!r}, {prefix!r}, {args.schedules}))"
        )
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        env = {
            **os.environ,
            "JOBS_DATABASE_URL": url,
            "JOBS_REDIS_URL": REDIS_URL,
            "JOBS_REDIS_PREFIX": prefix,
            "JOBS_TASK_MODULES": "benchmarks.tasks",
            "JOBS_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        }
        with tempfile.TemporaryFile() as log:
            scheduler = subprocess.Popen(
                [str(Path(sys.executable).with_name("jobsctl")), "scheduler"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            time.sleep(args.seconds)
            os.killpg(scheduler.pid, signal.SIGTERM)
            scheduler.wait(timeout=30)
            log.seek(0)
            lines = [
                json.loads(line)
                for line in log.read().decode().splitlines()
                if line.startswith(b"{"[0:1].decode()) and '"schedule-fired"' in line
            ]
        lateness = sorted(float(line["lateness_ms"]) for line in lines)
        runs, duplicates = asyncio.run(_duplicates(url))
        p99 = lateness[min(len(lateness) - 1, int(len(lateness) * 0.99))]
        result = {
            "benchmark": "scheduler_precision",
            "schedules": args.schedules,
            "seconds": args.seconds,
            "fires": len(lateness),
            "runs": runs,
            "duplicate_fires": duplicates,
            "lateness_ms": {"p50": lateness[len(lateness) // 2], "p99": p99, "max": lateness[-1]},
        }
        print(json.dumps(result, indent=2))
    finally:
        asyncio.run(drop_database(name))
        asyncio.run(clean_redis(prefix))


if __name__ == "__main__":
    main()
