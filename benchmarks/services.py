"""The benchmarks' PostgreSQL and Redis: where they are, and a throwaway database each."""

from __future__ import annotations

import os

import asyncpg
from redis.asyncio import Redis

__all__ = ["ADMIN_URL", "REDIS_URL", "clean_redis", "create_database", "drop_database"]

ADMIN_URL = os.environ.get(
    "JOBS_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# A Redis database of their own (keys under a per-run prefix besides), away from what the
# tests and a development deployment keep in database 0.
REDIS_URL = os.environ.get("JOBS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


async def create_database(name: str) -> str:
    """Create ``name``; returns its SQLAlchemy (asyncpg) URL."""
    connection = await asyncpg.connect(ADMIN_URL)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


async def drop_database(name: str) -> None:
    """Drop ``name``, disconnecting whoever still uses it."""
    connection = await asyncpg.connect(ADMIN_URL)
    await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await connection.close()


async def clean_redis(prefix: str) -> None:
    """Delete every key under ``prefix``, in chunks."""
    async with Redis.from_url(REDIS_URL) as redis:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await redis.delete(*keys[start : start + 1000])
