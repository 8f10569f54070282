"""TaskIQ's Redis stream broker, plus pipelined batch sends.

``kiq()`` costs one awaited XADD per task; :meth:`StreamBroker.kick_many` sends a whole
batch as one pipeline (one round trip), which is what ``enqueue_many`` and the batch
endpoint use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq_redis import RedisStreamBroker

from jobs_service.core.logging import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from taskiq.message import BrokerMessage

__all__ = ["StreamBroker"]

_log = get_logger("jobs_service.broker")


class StreamBroker(RedisStreamBroker):
    """RedisStreamBroker with a batch ``kick_many`` and a liveness ``ping``."""

    async def startup(self) -> None:
        """Start; a producer (the gateway) tolerates Redis being down at boot.

        The gateway then serves and reports 503 on ``/ready`` until Redis answers, and
        sends fail with a clear 503, instead of the process crash-looping. A worker
        cannot do anything without Redis, so it still fails at start.
        """
        try:
            await super().startup()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            if self.is_worker_process:
                raise
            _log.warning(
                "broker-unreachable",
                error=str(exc)[:300],
                message="starting anyway; /ready reports the broker down",
            )

    async def kick_many(self, messages: Sequence[BrokerMessage]) -> None:
        """XADD every message in one pipelined round trip (not a transaction)."""
        if not messages:
            return
        async with Redis(connection_pool=self.connection_pool) as redis:
            pipe = redis.pipeline(transaction=False)
            for message in messages:
                queue = message.labels.get("queue_name") or self.queue_name
                pipe.xadd(
                    queue,
                    {b"data": message.message},
                    maxlen=self.maxlen,
                    approximate=self.approximate,
                )
            await pipe.execute()

    async def ping(self) -> None:
        """Raise unless Redis answers."""
        async with Redis(connection_pool=self.connection_pool) as redis:
            await redis.ping()
