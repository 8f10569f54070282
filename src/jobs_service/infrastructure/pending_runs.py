"""Which runs still have a message pending in the stream: they will run (again).

A worker acknowledges a message only once the run's outcome is written, so a run
left ``running`` by a dead worker whose message is still pending has not lost its
outcome: the message waits for a reclaim, or another worker has reclaimed it and holds
it until a slot frees (behind long runs that can take minutes). Failing such a run as
orphaned would be wrong twice over: the run goes on, and its late start and finish
are refused by a history that already says ``failed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from jobs_service.infrastructure.redis_broker import StreamBroker
from jobs_service.infrastructure.redis_values import redis_text

if TYPE_CHECKING:
    from collections.abc import Collection

    from taskiq import AsyncBroker

__all__ = ["pending_runs"]

#: Pending entries looked at per round trip.
_PAGE = 500


async def pending_runs(broker: AsyncBroker, run_ids: Collection[str]) -> set[str]:
    """The run ids of ``run_ids`` whose message is pending (delivered to any consumer,
    not acknowledged) in the broker's stream; none without one (embedded).

    Reads the whole pending list, a page at a time, and each entry's message: this runs
    once a minute at most and only when a dead worker left runs behind, so a full scan
    is cheaper than keeping a run id index on every message's hot path.
    """
    wanted = set(run_ids)
    found: set[str] = set()
    if not wanted or not isinstance(broker, StreamBroker):
        return found
    async with Redis(connection_pool=broker.connection_pool) as redis:
        start = "-"
        while True:
            try:
                page = await redis.xpending_range(
                    broker.queue_name, broker.consumer_group_name, min=start, max="+", count=_PAGE
                )
            except ResponseError as exc:
                if start == "-" and str(exc).startswith("NOGROUP"):
                    return found  # no stream or group yet, so nothing is pending
                raise  # an answer for part of the list must not pass for the whole
            if not page:
                return found
            pipe = redis.pipeline(transaction=False)
            for entry in page:
                message_id = redis_text(entry["message_id"])
                pipe.xrange(broker.queue_name, min=message_id, max=message_id, count=1)
            for entries in await pipe.execute():
                for _, fields in entries:
                    run_id = _run_id_of(broker, fields.get(b"data"))
                    if run_id in wanted:
                        found.add(run_id)
            if len(page) < _PAGE:
                return found
            start = "(" + redis_text(page[-1]["message_id"])


def _run_id_of(broker: StreamBroker, data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return broker.formatter.loads(message=data).task_id
    except Exception:  # noqa: BLE001 - an unreadable message carries no run we know
        return None
