"""``python -m tests.chaos``: every failure scenario at full size, as a table.

Needs the local PostgreSQL and Redis (and ``redis-server`` for the restart scenario,
which runs its own). Exits 1 if any scenario lost work.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from pathlib import Path

from tests.chaos.scenarios import SCENARIOS, Cluster, Row, format_table
from tests.support.databases import create_database, drop_database
from tests.support.redis_server import PrivateRedis
from tests.support.services import redis_url


def main() -> int:
    """Run the scenarios and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=200, help="runs per scenario")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    args = parser.parse_args()
    name = f"jobs_chaos_{uuid.uuid4().hex[:8]}"
    database_url = asyncio.run(create_database(name))
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="jobs-chaos-") as work:
            for scenario in args.only or list(SCENARIOS):
                workdir = Path(work) / scenario
                workdir.mkdir()
                if scenario == "redis_restart":
                    server = PrivateRedis(workdir, durable=True)
                    server.start()
                    try:
                        cluster = Cluster(workdir, database_url, server.url)
                        rows.append(SCENARIOS[scenario](cluster, args.size, server))
                    finally:
                        server.stop()
                else:
                    cluster = Cluster(workdir, database_url, redis_url())
                    rows.append(SCENARIOS[scenario](cluster, args.size))
                print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        asyncio.run(drop_database(name))
    print()
    print(format_table(rows))
    return 1 if any(row.lost for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
