"""TaskIQ's Redis stream broker, made to keep its promise under failure.

taskiq-redis reads with XREADGROUP and acknowledges with XACK, but on its own:

- it reclaims a crashed worker's messages only after a *new* message arrives (the
  XAUTOCLAIM runs after each read that returned something);
- it cannot tell a crashed worker from a slow one, so a task running longer than the
  idle timeout is handed to a second worker while the first still runs it;
- its read loop ends with the first connection error (a Redis restart kills it).

:class:`StreamBroker` reads with a bounded block and reclaims idle messages on a timer,
whether or not new work arrives; it tracks the messages it holds so
:class:`~jobs_service.infrastructure.stream_upkeep.StreamUpkeep` can renew their lease
(XCLAIM to itself) while they run; and it reconnects with backoff. It also adds a
pipelined ``kick_many`` (one round trip for a batch) and a liveness ``ping``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq import AckableMessage
from taskiq_redis import RedisStreamBroker

from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.ack_batcher import AckBatcher

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence

    from taskiq.message import BrokerMessage

__all__ = ["HeldMessage", "StreamBroker"]

_log = get_logger("jobs_service.broker")
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_MAX_BACKOFF_S = 10.0
# A message delivered this many times never finished anywhere (it crashes its worker, or
# a middleware refuses it): it goes to the dead-letter stream instead of round again.
MAX_DELIVERIES = 10


class HeldMessage:
    """A message this worker read and has not acknowledged yet."""

    __slots__ = ("since", "stream")

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.since = time.monotonic()


class StreamBroker(RedisStreamBroker):
    """RedisStreamBroker with timed reclaim, leases, reconnection and batch sends."""

    def __init__(self, *args: Any, reclaim_interval_s: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reclaim_interval_s = reclaim_interval_s
        self.held: dict[str, HeldMessage] = {}
        self._ack_batcher: AckBatcher | None = None

    def _acks(self) -> AckBatcher:
        if self._ack_batcher is None:
            self._ack_batcher = AckBatcher(self.connection_pool, self.consumer_group_name)
        return self._ack_batcher

    @property
    def dead_letter_stream(self) -> str:
        """Where messages that failed ``MAX_DELIVERIES`` deliveries are kept."""
        return f"{self.queue_name}:dead"

    def name_this_process(self) -> None:
        """A consumer name of this process's own (after a fork, children would share
        the parent's, and so their pending messages and heartbeat)."""
        self.consumer_name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.held.clear()

    async def startup(self) -> None:
        """Start; a producer (the gateway) tolerates Redis being down at boot.

        The gateway then serves and reports 503 on ``/ready`` until Redis answers, and
        sends fail with a clear 503, instead of the process crash-looping. A worker
        cannot do anything without Redis, so it still fails at start.
        """
        try:
            await super().startup()
        except _UNREACHABLE as exc:
            if self.is_worker_process:
                raise
            _log.warning(
                "broker-unreachable",
                error=str(exc)[:300],
                message="starting anyway; /ready reports the broker down",
            )

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """New messages, and every ``reclaim_interval_s`` the idle ones of dead workers."""
        backoff = 0.2
        next_reclaim = 0.0
        batch: list[tuple[str, AckableMessage]] = []
        try:
            while True:
                try:
                    async with Redis(connection_pool=self.connection_pool) as redis:
                        while True:
                            if time.monotonic() >= next_reclaim:
                                next_reclaim = time.monotonic() + self.reclaim_interval_s
                                batch = await self._reclaim(redis)
                                while batch:
                                    yield batch.pop(0)[1]
                            wait_ms = (next_reclaim - time.monotonic()) * 1000
                            fetched: Any = await redis.xreadgroup(
                                self.consumer_group_name,
                                self.consumer_name,
                                {self.queue_name: ">"},
                                block=max(10, min(self.block, int(wait_ms))),
                                count=self.count,
                                noack=False,
                            )
                            backoff = 0.2
                            # The whole batch is held (its lease renewed) from now on: the
                            # receiver may take a while to start the last of it.
                            batch = [
                                self._held(_text(stream), _text(message_id), fields)
                                for stream, entries in fetched or []
                                for message_id, fields in entries
                            ]
                            while batch:
                                yield batch.pop(0)[1]
                except _UNREACHABLE as exc:
                    _log.warning("broker-reconnecting", error=str(exc)[:300], retry_in_s=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
                except ResponseError as exc:
                    # NOGROUP: Redis came back without the group (it lost its data, or
                    # the stream was deleted). Others (MISCONF, LOADING): Redis is not
                    # ready. Either way: back off, make sure the group exists, go on.
                    _log.warning("broker-error", error=str(exc)[:300], retry_in_s=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
                    with contextlib.suppress(*_UNREACHABLE, ResponseError):
                        await self._declare_consumer_group()
        finally:
            # Read but never started (the worker is stopping): stop renewing them, so
            # another worker takes them after the idle timeout.
            for message_id, _ in batch:
                self.held.pop(message_id, None)

    async def _reclaim(self, redis: Redis) -> list[tuple[str, AckableMessage]]:
        """Take over messages idle longer than ``idle_timeout``: their worker is gone
        (a live worker renews the lease of every message it holds).

        At most ``xread_count`` at a time, like a read, so a busy worker does not sit on
        a dead worker's backlog; a message delivered ``MAX_DELIVERIES`` times goes to
        the dead-letter stream instead.
        """
        answer = await redis.xautoclaim(
            self.queue_name,
            self.consumer_group_name,
            self.consumer_name,
            min_idle_time=self.idle_timeout,
            start_id="0-0",
            count=self.count or 10,
        )
        claimed: list[tuple[str, AckableMessage]] = []
        for raw_id, fields in answer[1]:
            message_id = _text(raw_id)
            if message_id in self.held:
                continue  # our own, renewed late (a stalled loop): still running here
            if not fields:  # trimmed away while pending
                await redis.xack(self.queue_name, self.consumer_group_name, message_id)
                continue
            if await self._delivered_too_often(redis, message_id, fields):
                continue
            claimed.append(self._held(self.queue_name, message_id, fields))
        if claimed:
            _log.warning("broker-reclaimed", messages=len(claimed))
        return claimed

    async def _delivered_too_often(self, redis: Redis, message_id: str, fields: Any) -> bool:
        info = await redis.xpending_range(
            self.queue_name, self.consumer_group_name, min=message_id, max=message_id, count=1
        )
        deliveries = int(info[0]["times_delivered"]) if info else 0
        if deliveries <= MAX_DELIVERIES:
            return False
        pipe = redis.pipeline(transaction=True)
        pipe.xadd(self.dead_letter_stream, {b"data": fields[b"data"], b"id": message_id})
        pipe.xack(self.queue_name, self.consumer_group_name, message_id)
        await pipe.execute()
        _log.error("message-dead-lettered", message_id=message_id, deliveries=deliveries)
        return True

    def _held(self, stream: str, message_id: str, fields: Any) -> tuple[str, AckableMessage]:
        self.held[message_id] = HeldMessage(stream)

        async def ack() -> None:
            try:
                await self._acks().ack(stream, message_id)
            finally:
                # Acked, or the ack failed: either way stop renewing. A failed ack
                # leaves the message pending, so it is re-run after the idle timeout.
                self.held.pop(message_id, None)

        return message_id, AckableMessage(data=fields[b"data"], ack=ack)

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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
