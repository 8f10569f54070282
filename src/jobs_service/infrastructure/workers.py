"""Which worker processes are alive, from their heartbeats in Redis.

Each worker refreshes ``<prefix>:workers:<consumer>`` every few seconds with a short
TTL (see :mod:`jobs_service.infrastructure.stream_upkeep`); a key that expired is a
worker that died without saying goodbye.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson
from redis.asyncio import Redis

from jobs_service.infrastructure.redis_broker import StreamBroker
from jobs_service.infrastructure.redis_values import redis_text
from jobs_service.infrastructure.stream_upkeep import last_seen_key

if TYPE_CHECKING:
    from datetime import datetime

    from taskiq import AsyncBroker

__all__ = ["LAST_SEEN_KEPT", "LiveWorker", "live_workers", "prune_last_seen"]

#: How long a worker's last heartbeat is remembered: far longer than it takes to judge
#: a silent worker dead (about 95 s by default), so only the long gone are forgotten.
LAST_SEEN_KEPT = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class LiveWorker:
    """One worker process that beat recently."""

    consumer: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    held: int
    #: Whether its runs carry the consumer name (False: a release that wrote host:pid).
    runs_named_by_consumer: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """How run records name this worker: its process name (``host:pid:<random>``);
        ``host:pid`` only for a worker of an earlier release, which named runs so. (A
        current worker that happens to have an old one's host and pid, restarted in
        place, must not pass for it.)"""
        if self.runs_named_by_consumer:
            return (self.consumer,)
        return self.consumer, f"{self.host}:{self.pid}"


async def live_workers(broker: AsyncBroker, prefix: str) -> list[LiveWorker] | None:
    """The live workers; None when there is no Redis (embedded: one process)."""
    if not isinstance(broker, StreamBroker):
        return None
    found: list[LiveWorker] = []
    async with Redis(connection_pool=broker.connection_pool) as redis:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}:workers:*", count=500)]
        values = await redis.mget(keys) if keys else []
    for raw in values:
        if raw is None:
            continue
        state: dict[str, Any] = orjson.loads(raw)
        found.append(
            LiveWorker(
                consumer=str(state["consumer"]),
                host=str(state["host"]),
                pid=int(state["pid"]),
                started_at=float(state["started_at"]),
                seen_at=float(state["seen_at"]),
                held=int(state["held"]),
                runs_named_by_consumer=bool(state.get("runs_named_by_consumer", False)),
            )
        )
    return sorted(found, key=lambda worker: worker.started_at)


async def prune_last_seen(
    broker: AsyncBroker, prefix: str, *, before: datetime
) -> dict[str, float]:
    """Worker name → Unix time of its last heartbeat, for every worker seen since
    ``before``; older entries are deleted (every process start adds one)."""
    if not isinstance(broker, StreamBroker):
        return {}
    cutoff = before.timestamp()
    async with Redis(connection_pool=broker.connection_pool) as redis:
        raw = await redis.hgetall(last_seen_key(prefix))
        seen = {redis_text(name): float(when) for name, when in raw.items()}
        gone = [name for name, when in seen.items() if when < cutoff]
        if gone:
            await redis.hdel(last_seen_key(prefix), *gone)
    return {name: when for name, when in seen.items() if when >= cutoff}
