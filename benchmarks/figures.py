"""Small statistics every workload reports, and the machine a result was measured on.

Repetitions are summarised as median with min and max (the issue's reporting rule);
latency samples by nearest-rank percentiles, so a p99 is always a latency that was
actually observed.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import math
import os
import platform
import statistics
from typing import TYPE_CHECKING, Any

import asyncpg
from redis.asyncio import Redis

from benchmarks.services import ADMIN_URL, REDIS_URL

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["distribution", "machine", "percentile", "spread"]


def spread(values: Iterable[float]) -> dict[str, float]:
    """Median, min and max of the repetitions."""
    items = list(values)
    return {"median": statistics.median(items), "min": min(items), "max": max(items)}


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted samples (``fraction`` in 0..1)."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def distribution(samples: Iterable[float], *, scale: float = 1.0) -> dict[str, float]:
    """p50, p99 and max of ``samples`` times ``scale`` (1000: seconds to ms)."""
    ordered = sorted(sample * scale for sample in samples)
    return {
        "count": len(ordered),
        "p50": percentile(ordered, 0.50),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1],
    }


async def _server_versions() -> dict[str, str]:
    async with Redis.from_url(REDIS_URL) as redis:
        info = await redis.info("server")
    connection = await asyncpg.connect(ADMIN_URL)
    postgres = str(await connection.fetchval("SHOW server_version"))
    await connection.close()
    return {"redis": str(info.get("redis_version")), "postgresql": postgres}


def machine() -> dict[str, Any]:
    """CPU count, platform, Python, the packages that decide the figures, servers."""
    versions = {}
    for package in ("taskiq", "taskiq-redis", "redis", "uvloop", "asyncpg", "uvicorn"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "absent"
    return {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "servers": asyncio.run(_server_versions()),
    }
