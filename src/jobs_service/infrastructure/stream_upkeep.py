"""What a worker does beside running tasks to keep the stream honest.

- **Leases.** Every ``idle_timeout / 3`` the worker XCLAIMs (to itself, with idle 0)
  every message it still holds. A running task's message therefore never looks idle,
  so it is not handed to another worker however long it runs; a killed worker stops
  renewing, and its messages are reclaimed one idle timeout later.
- **Heartbeat.** ``<prefix>:workers:<consumer>`` with a short TTL says the worker is
  alive and how much it holds (``GET /v1/workers`` and health checks read it).
- **Trimming.** XACK does not delete: the stream would grow forever. Entries older than
  both the oldest pending message and the group's last delivered id are acknowledged,
  so ``XTRIM MINID`` removes exactly those and never an unacknowledged one.
- **Delayed messages** due now are moved to the stream (retries after backoff).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import orjson
from redis.asyncio import Redis

from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.background import run_every, stop_task
from jobs_service.infrastructure.delayed import DelayedMover
from jobs_service.infrastructure.redis_values import redis_text

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable

    from jobs_service.infrastructure.redis_broker import StreamBroker

__all__ = [
    "HEARTBEAT_TTL_S",
    "StreamUpkeep",
    "last_seen_key",
    "trim_acknowledged",
    "worker_key",
]

_log = get_logger("jobs_service.broker")
HEARTBEAT_INTERVAL_S = 5.0
HEARTBEAT_TTL_S = 15
TRIM_INTERVAL_S = 60.0


def worker_key(prefix: str, consumer: str) -> str:
    """The heartbeat key of one worker process."""
    return f"{prefix}:workers:{consumer}"


def last_seen_key(prefix: str) -> str:
    """Hash of worker name → the last heartbeat's Unix time, kept after the worker died
    (pruned by ``recover_orphaned_runs`` once long gone)."""
    return f"{prefix}:workers-last-seen"


async def trim_acknowledged(redis: Redis, stream: str, group: str) -> int:
    """Delete entries every consumer has acknowledged; returns how many went."""
    groups = [g for g in await redis.xinfo_groups(stream) if redis_text(g["name"]) == group]
    if not groups:
        return 0
    last_delivered = redis_text(groups[0]["last-delivered-id"])
    pending = await redis.xpending(stream, group)
    oldest_pending = redis_text(pending["min"]) if pending["pending"] else None
    floor = min((last_delivered, oldest_pending or last_delivered), key=_id_key)
    if floor == "0-0":
        return 0
    return int(await redis.xtrim(stream, minid=floor, approximate=False))


class StreamUpkeep:
    """Lease renewal, heartbeat, trimming and delayed moves of one worker process."""

    def __init__(self, broker: StreamBroker, *, prefix: str, max_lease_s: float) -> None:
        self._broker = broker
        self._prefix = prefix
        self._max_lease_s = max_lease_s
        self._mover = DelayedMover(broker)
        self._tasks: list[asyncio.Task[None]] = []
        self._started = time.time()

    def start(self) -> None:
        """Start the loops (idempotent)."""
        if self._tasks:
            return
        renew_every = max(self._broker.idle_timeout / 1000 / 3, 0.1)
        loops: list[tuple[str, float, Callable[[], Awaitable[Any]]]] = [
            ("lease", renew_every, self.renew_leases),
            ("heartbeat", HEARTBEAT_INTERVAL_S, self.beat),
            ("trim", TRIM_INTERVAL_S, self.trim),
        ]
        self._tasks = [run_every(name, seconds, step) for name, seconds, step in loops]
        self._mover.start()

    async def stop(self) -> None:
        """Stop the loops and withdraw the heartbeat."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await stop_task(task)
        await self._mover.stop()
        with contextlib.suppress(Exception):
            async with Redis(connection_pool=self._broker.connection_pool) as redis:
                await redis.delete(worker_key(self._prefix, self._broker.consumer_name))

    async def renew_leases(self) -> int:
        """Reset the idle time of every held message; returns how many were renewed."""
        broker = self._broker
        now = time.monotonic()
        by_stream: dict[str, list[int | bytes | str | memoryview[int]]] = defaultdict(list)
        for message_id, held in list(broker.held.items()):
            if now - held.since > self._max_lease_s:
                # Held far longer than any task may run: its task is wedged or lost.
                # Let the lease lapse so another worker re-runs it.
                broker.held.pop(message_id, None)
                _log.error("lease-abandoned", message_id=message_id, held_s=int(now - held.since))
                continue
            by_stream[held.stream].append(message_id)
        if not by_stream:
            return 0
        renewed = 0
        async with Redis(connection_pool=broker.connection_pool) as redis:
            for stream, ids in by_stream.items():
                claimed = await redis.xclaim(
                    stream,
                    broker.consumer_group_name,
                    broker.consumer_name,
                    min_idle_time=0,
                    message_ids=ids,
                    justid=True,
                )
                renewed += len(claimed)
        return renewed

    async def beat(self) -> None:
        """Say this worker is alive, and what it holds."""
        broker = self._broker
        seen_at = time.time()
        state = {
            "consumer": broker.consumer_name,
            # Runs name their worker by the consumer name (releases before named them
            # host:pid); tells recover_orphaned_runs which names a worker answers to.
            "runs_named_by_consumer": True,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self._started,
            "seen_at": seen_at,
            "held": len(broker.held),
        }
        async with Redis(connection_pool=broker.connection_pool) as redis:
            pipe = redis.pipeline(transaction=False)
            pipe.set(
                worker_key(self._prefix, broker.consumer_name),
                orjson.dumps(state),
                ex=HEARTBEAT_TTL_S,
            )
            # Never expires: tells how long ago a worker that is gone was last alive.
            pipe.hset(last_seen_key(self._prefix), broker.consumer_name, seen_at)
            await pipe.execute()

    async def trim(self) -> int:
        """Trim acknowledged entries from the stream."""
        broker = self._broker
        async with Redis(connection_pool=broker.connection_pool) as redis:
            removed = await trim_acknowledged(redis, broker.queue_name, broker.consumer_group_name)
        if removed:
            _log.info("stream-trimmed", removed=removed)
        return removed


def _id_key(stream_id: str) -> tuple[int, int]:
    millis, _, sequence = stream_id.partition("-")
    return int(millis), int(sequence or 0)
