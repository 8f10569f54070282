"""Queue depth and the age of the oldest waiting message, read when Prometheus scrapes.

Workers count what they run; what has not run yet lives in the broker, and no process
counts it as it goes (a counter per enqueue and per run would cost the worker's hot path
and drift whenever a process dies). So the gateway reads the queue itself at scrape
time, once per scrape: one pipelined round trip to Redis (``XINFO GROUPS``, the
``XPENDING`` summary, ``XLEN``, ``ZCARD`` of the delayed set, ``XLEN`` of the dead-letter
stream and ``TIME``) plus, when messages wait, one ``XRANGE … COUNT 1`` for the oldest.
Stream ids are Redis's clock in milliseconds, and ages are taken against Redis's own
``TIME``, so a skewed gateway clock does not age the queue.

A scrape must answer even when Redis does not: the read is bounded by a timeout, and a
failed read exposes ``jobs_queue_up 0`` and *no* depth samples (a stale or zero depth
would read as "all is well" on a dashboard). A snapshot is reused for ``max_age_s``, so
several Prometheus replicas scraping together cost one read.

The embedded in-memory broker has no queue to read: every message it is given starts at
once, so its depth is the messages in flight plus the retries waiting on timers.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.delayed import delayed_in_process, delayed_key
from jobs_service.infrastructure.redis_broker import StreamBroker
from jobs_service.infrastructure.redis_values import redis_text

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client import Metric
    from taskiq import AsyncBroker

__all__ = ["QUEUE_FAMILIES", "QueueCollector", "QueueProbe", "QueueSnapshot", "queue_exposition"]

_log = get_logger("jobs_service.metrics")

#: The families this module exposes, with their help text (the collector, the docs test
#: and the dashboard test read this one list).
QUEUE_FAMILIES = {
    "jobs_queue_up": "1 if the last read of the queue succeeded, 0 if the broker did not answer",
    "jobs_queue_depth": "Messages in the queue by state: ready (not yet read by a worker), "
    "pending (read, not acknowledged: running), delayed (retries waiting for their "
    "backoff), dead_letter (delivered too often, set aside)",
    "jobs_queue_oldest_age_seconds": "Age of the oldest message by state, since it was "
    "queued: ready (waiting for a worker) and pending (read by a worker, not yet "
    "acknowledged; its wait included)",
}


@dataclass(frozen=True)
class QueueSnapshot:
    """One reading of a queue. ``up`` False: the broker did not answer, nothing else."""

    queue: str
    up: bool
    depth: dict[str, int] = field(default_factory=dict)
    oldest_age_s: dict[str, float] = field(default_factory=dict)


class QueueCollector(Collector):
    """Exposes one :class:`QueueSnapshot` (a collector per scrape: no global state)."""

    def __init__(self, snapshot: QueueSnapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """The three queue families; depth and age samples only when the read succeeded."""
        queue = self._snapshot.queue
        up = GaugeMetricFamily("jobs_queue_up", QUEUE_FAMILIES["jobs_queue_up"], labels=["queue"])
        up.add_metric([queue], 1.0 if self._snapshot.up else 0.0)
        depth = GaugeMetricFamily(
            "jobs_queue_depth", QUEUE_FAMILIES["jobs_queue_depth"], labels=["queue", "state"]
        )
        for state, count in self._snapshot.depth.items():
            depth.add_metric([queue, state], float(count))
        oldest = GaugeMetricFamily(
            "jobs_queue_oldest_age_seconds",
            QUEUE_FAMILIES["jobs_queue_oldest_age_seconds"],
            labels=["queue", "state"],
        )
        for state, age in self._snapshot.oldest_age_s.items():
            oldest.add_metric([queue, state], age)
        yield up
        yield depth
        yield oldest


def queue_exposition(snapshot: QueueSnapshot) -> bytes:
    """``snapshot`` in Prometheus's text format, to append to the process's own metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(snapshot))
    return generate_latest(registry)


class QueueProbe:
    """Reads a broker's queue on demand, bounded by ``timeout_s``, reused for ``max_age_s``."""

    def __init__(
        self, broker: AsyncBroker, *, timeout_s: float = 1.0, max_age_s: float = 1.0
    ) -> None:
        self._broker = broker
        self._timeout_s = timeout_s
        self._max_age_s = max_age_s
        self._lock = asyncio.Lock()
        self._last: QueueSnapshot | None = None
        self._taken = 0.0

    async def snapshot(self) -> QueueSnapshot:
        """The queue now (or as read less than ``max_age_s`` ago)."""
        async with self._lock:  # concurrent scrapes share one read
            if self._last is not None and time.monotonic() - self._taken < self._max_age_s:
                return self._last
            self._last = await self._read()
            self._taken = time.monotonic()
            return self._last

    async def _read(self) -> QueueSnapshot:
        broker = self._broker
        if not isinstance(broker, StreamBroker):
            return _in_memory(broker)
        try:
            return await asyncio.wait_for(_read_stream(broker), self._timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            if self._last is None or self._last.up:  # once per outage, not per scrape
                _log.warning("queue-metrics-unavailable", error=str(exc) or type(exc).__name__)
            return QueueSnapshot(queue=broker.queue_name, up=False)


def _in_memory(broker: AsyncBroker) -> QueueSnapshot:
    # TaskIQ exposes no public view of the in-memory broker's running tasks.
    running = len(getattr(broker, "_running_tasks", ()))
    return QueueSnapshot(
        queue="in-memory",
        up=True,
        depth={"ready": 0, "pending": running, "delayed": delayed_in_process()},
    )


async def _read_stream(broker: StreamBroker) -> QueueSnapshot:
    stream, group = broker.queue_name, broker.consumer_group_name
    async with Redis(connection_pool=broker.connection_pool) as redis:
        pipe = redis.pipeline(transaction=False)
        pipe.time()
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
        pipe.xpending(stream, group)
        pipe.zcard(delayed_key(broker))
        pipe.xlen(broker.dead_letter_stream)
        now, length, groups, pending, delayed, dead = await pipe.execute(raise_on_error=False)
        for reply in (now, length, delayed, dead):
            if isinstance(reply, Exception):
                raise reply
        now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
        info = _group(groups, group)
        depth = {"delayed": int(delayed), "dead_letter": int(dead)}
        oldest: dict[str, float] = {}
        if info is None:  # no worker has started yet: everything in the stream waits
            depth["ready"], depth["pending"], after = int(length), 0, "-"
        else:
            lag = info.get("lag")
            if lag is not None:  # None: Redis cannot tell (entries deleted mid-stream)
                depth["ready"] = int(lag)
            depth["pending"] = int(info.get("pending") or 0)
            after = "(" + redis_text(info.get("last-delivered-id") or b"0-0")
            if isinstance(pending, Exception):
                raise pending
            if depth["pending"] and pending.get("min"):
                oldest["pending"] = _age_s(now_ms, pending["min"])
        if depth.get("ready", 1):
            first = await redis.xrange(stream, min=after, max="+", count=1)
            message_id = first[0][0] if first else None
            oldest["ready"] = _age_s(now_ms, message_id) if message_id else 0.0
        else:
            oldest["ready"] = 0.0
        oldest.setdefault("pending", 0.0)
    return QueueSnapshot(queue=stream, up=True, depth=depth, oldest_age_s=oldest)


def _group(groups: Any, name: str) -> dict[str, Any] | None:
    """Our group's ``XINFO GROUPS`` entry; None when the stream or group does not exist."""
    if isinstance(groups, ResponseError):  # no such key: nothing was ever queued
        return None
    if isinstance(groups, Exception):
        raise groups
    for entry in groups:
        if redis_text(entry.get("name", b"")) == name:
            return dict(entry)
    return None


def _age_s(now_ms: int, message_id: bytes | str) -> float:
    """Seconds since a stream id's millisecond part (Redis's clock on both sides)."""
    millis = int(redis_text(message_id).split("-", 1)[0])
    return max(0.0, (now_ms - millis) / 1000)
