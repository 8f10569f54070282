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
``kick_many`` (one round trip for a batch, whose failure tells a refused send from an
unconfirmed one, see :mod:`~jobs_service.infrastructure.redis_sends`) and a liveness
``ping``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from taskiq import AckableMessage
from taskiq_redis import RedisStreamBroker

from jobs_service.core.ids import process_name
from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.completions import Completions, RecordGate
from jobs_service.infrastructure.redis_sends import add_messages
from jobs_service.infrastructure.redis_values import REDIS_UNREACHABLE, redis_text
from jobs_service.infrastructure.unknown_tasks import (
    record_poison,
    settle_unknown_task,
    unknown_task_of,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence

    from taskiq.message import BrokerMessage

    from jobs_service.infrastructure.completions import ResultEntry

__all__ = ["Delivery", "StreamBroker"]

_log = get_logger("jobs_service.broker")
_MAX_BACKOFF_S = 10.0
# A message delivered this many times never finished anywhere (it crashes its worker, or
# a middleware refuses it): it goes to the dead-letter stream instead of round again.
MAX_DELIVERIES = 10
# XAUTOCLAIM calls of one reclaim at most: each looks at 10 x count pending entries, so
# even a one-slot reclaim sees 500 of them; the next reclaim goes on from there.
RECLAIM_SCANS = 50


class Delivery:
    """A message this worker read and has not settled yet (it is *held*: its lease is
    renewed while it waits and runs).

    ``deliveries`` is the stream's delivery count: 1 for a new message, what XPENDING
    says for a reclaimed one (the reclaim reads it anyway, to find poison messages).
    """

    __slots__ = ("_broker", "data", "deliveries", "message_id", "since", "stream")

    def __init__(
        self, broker: StreamBroker, stream: str, message_id: str, data: bytes, deliveries: int = 1
    ) -> None:
        self._broker = broker
        self.stream = stream
        self.message_id = message_id
        self.data = data
        self.deliveries = deliveries
        self.since = time.monotonic()

    @property
    def broker(self) -> StreamBroker:
        """The broker that read it."""
        return self._broker

    @property
    def is_last(self) -> bool:
        """True when no other delivery will follow: left unsettled, the message goes to
        the dead-letter stream at its next reclaim."""
        return self.deliveries >= MAX_DELIVERIES

    def release(self) -> None:
        """Stop renewing the lease without acknowledging: one idle timeout later another
        worker (or this one) reclaims the message."""
        self._broker.held.pop(self.message_id, None)

    def finish(self, result: ResultEntry | None = None) -> None:
        """Store ``result`` and acknowledge, batched with others; does not wait."""
        self._broker.completions.complete(self.stream, self.message_id, result)

    async def ack(self) -> None:
        """Acknowledge and wait for Redis to confirm (TaskIQ's ``AckableMessage.ack``)."""
        await self._broker.completions.complete_and_wait(self.stream, self.message_id)


class StreamBroker(RedisStreamBroker):
    """RedisStreamBroker with timed reclaim, leases, reconnection and batch sends."""

    def __init__(
        self,
        *args: Any,
        reclaim_interval_s: float = 5.0,
        sent_marker_ttl_s: int = 3600,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.reclaim_interval_s = reclaim_interval_s
        self.sent_marker_ttl_s = sent_marker_ttl_s
        self.held: dict[str, Delivery] = {}
        self._completions: Completions | None = None
        #: The gate a shut-down batcher still had: runs that outlived the worker's stop
        #: (see JobsReceiver.listen) finish after shutdown and must still wait for it.
        self._lingering_gate: RecordGate | None = None
        self._reader: Redis | None = None
        self._next_reclaim = 0.0
        self._reclaim_from = "0-0"
        self._backoff = 0.2

    @property
    def completions(self) -> Completions:
        """The batched result-save-and-acknowledge of this process."""
        if self._completions is None:
            self._completions = Completions(
                self.connection_pool, self.consumer_group_name, on_settled=self._release
            )
            self._completions.gate = self._lingering_gate
        return self._completions

    def _release(self, message_id: str) -> None:
        self.held.pop(message_id, None)

    @property
    def dead_letter_stream(self) -> str:
        """Where messages that failed ``MAX_DELIVERIES`` deliveries are kept."""
        return f"{self.queue_name}:dead"

    def name_this_process(self) -> None:
        """A consumer name of this process's own (after a fork, children would share
        the parent's, and so their pending messages and heartbeat)."""
        self.consumer_name = process_name()
        self.held.clear()

    async def startup(self) -> None:
        """Start, also while Redis is down (it often starts after the service, or
        restarts): the process waits for it instead of crash-looping.

        The gateway serves and reports 503 on ``/ready`` until Redis answers, and sends
        fail with a clear 503. A worker's reads retry with backoff, and the first one
        that finds Redis creates the consumer group, which is the step that failed.
        """
        try:
            await super().startup()
        except REDIS_UNREACHABLE as exc:
            _log.warning(
                "broker-unreachable",
                error=str(exc)[:300],
                message="waiting for Redis: reads retry with backoff"
                if self.is_worker_process
                else "starting anyway; /ready reports the broker down",
            )

    async def shutdown(self) -> None:
        """Confirm the completions in flight, then close the connections."""
        if self._completions is not None:
            await self._completions.drain(timeout_s=10)
            await self._completions.aclose()
            self._lingering_gate = self._completions.gate
            self._completions = None
        if self._reader is not None:
            with contextlib.suppress(*REDIS_UNREACHABLE):
                await self._reader.aclose()
            self._reader = None
        await super().shutdown()

    async def read(self, count: int) -> list[Delivery]:
        """Up to ``count`` messages, held from now on: when a reclaim is due the idle
        ones of dead workers first, else new ones, waiting for them at most until the
        next reclaim is due. Empty when nothing came.

        Redis errors are not raised: the read reconnects, waiting with backoff, so a
        Redis restart pauses the worker instead of ending it.
        """
        while True:
            try:
                return await self._read_once(max(count, 1))
            except REDIS_UNREACHABLE as exc:
                _log.warning("broker-reconnecting", error=str(exc)[:300], retry_in_s=self._backoff)
                await self._back_off()
            except ResponseError as exc:
                # NOGROUP: Redis came back without the group (it lost its data, or the
                # stream was deleted). Others (MISCONF, LOADING): Redis is not ready.
                # Either way: back off, make sure the group exists, go on.
                _log.warning("broker-error", error=str(exc)[:300], retry_in_s=self._backoff)
                await self._back_off()
                with contextlib.suppress(*REDIS_UNREACHABLE, ResponseError):
                    await self._declare_consumer_group()

    async def _back_off(self) -> None:
        await asyncio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF_S)

    async def _read_once(self, count: int) -> list[Delivery]:
        if self._reader is None:
            self._reader = Redis(connection_pool=self.connection_pool)
        redis = self._reader
        now = time.monotonic()
        if now >= self._next_reclaim:
            self._next_reclaim = now + self.reclaim_interval_s
            claimed = await self._reclaim(redis, min(count, self.count or count))
            self._backoff = 0.2
            if claimed:
                return claimed
        wait_ms = (self._next_reclaim - time.monotonic()) * 1000
        fetched: Any = await redis.xreadgroup(
            self.consumer_group_name,
            self.consumer_name,
            {self.queue_name: ">"},
            block=max(10, min(self.block, int(wait_ms))),
            count=count,
            noack=False,
        )
        self._backoff = 0.2
        # The whole batch is held (its lease renewed) from now on: the receiver may
        # take a while to start the last of it.
        batch: list[Delivery] = []
        malformed: list[tuple[str, Any]] = []
        for stream, entries in fetched or []:
            for message_id, fields in entries:
                if b"data" in fields:
                    batch.append(self._hold(redis_text(stream), redis_text(message_id), fields))
                else:
                    malformed.append((redis_text(message_id), fields))
        try:
            for message_id, fields in malformed:
                await self._set_aside(redis, message_id, fields)
        except BaseException:
            _let_go(batch)  # not handed over: another read takes them after the timeout
            raise
        return batch

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """TaskIQ's interface (its own receiver): :meth:`read`, one message at a time.

        A message of a task this worker does not know is settled here
        (:mod:`~jobs_service.infrastructure.unknown_tasks`): TaskIQ's receiver would
        acknowledge and drop it.
        """
        batch: list[Delivery] = []
        try:
            while True:
                batch = await self.read(self.count or 10)
                while batch:
                    delivery = batch.pop(0)
                    unknown = unknown_task_of(self, delivery.data)
                    if unknown is not None:
                        await settle_unknown_task(delivery, unknown)
                        continue
                    yield AckableMessage(data=delivery.data, ack=delivery.ack)
        finally:
            # Read but never started (the worker is stopping): stop renewing them, so
            # another worker takes them after the idle timeout.
            _let_go(batch)

    async def _reclaim(self, redis: Redis, count: int) -> list[Delivery]:
        """Take over messages idle longer than ``idle_timeout``: their worker is gone
        (a live worker renews the lease of every message it holds).

        At most ``count`` at a time, like a read, so a busy worker does not sit on a
        dead worker's backlog; a message delivered ``MAX_DELIVERIES`` times goes to the
        dead-letter stream instead.
        """
        entries = await self._idle_entries(redis, count)
        claimed: list[Delivery] = []
        try:
            for raw_id, fields in entries:
                message_id = redis_text(raw_id)
                if message_id in self.held:
                    continue  # our own, renewed late (a stalled loop): still running here
                if not fields:  # trimmed away while pending
                    await redis.xack(self.queue_name, self.consumer_group_name, message_id)
                    continue
                if b"data" not in fields:
                    await self._set_aside(redis, message_id, fields)
                    continue
                deliveries = await self._deliveries(redis, message_id, fields)
                if deliveries is None:
                    continue
                claimed.append(self._hold(self.queue_name, message_id, fields, deliveries))
        except BaseException:
            # Redis went away halfway (or the read was cancelled): the messages taken so
            # far are not handed over, so stop renewing them, or they would sit here
            # until max_lease_s; the next reclaim takes them again, like the rest.
            _let_go(claimed)
            raise
        if claimed:
            _log.warning("broker-reclaimed", messages=len(claimed))
        return claimed

    async def _set_aside(self, redis: Redis, message_id: str, fields: Any) -> None:
        """Move an entry that is no message of ours (no ``data`` field: added by hand
        or by another program) to the dead-letter stream as it was, its stream id under
        "id" (or "message_id", if it has an "id" of its own), and acknowledge it: it
        would stop every worker that read it, and nothing of it is lost."""
        key = b"message_id" if b"id" in fields else b"id"
        await self._dead_letter(redis, message_id, {**fields, key: message_id})
        _log.error(
            "message-malformed",
            message_id=message_id,
            fields=sorted(redis_text(name) for name in fields)[:20],
            dead_letters=self.dead_letter_stream,
            message="no data field: set aside in the dead-letter stream",
        )

    async def _dead_letter(self, redis: Redis, message_id: str, kept: Any) -> None:
        """Add ``kept`` to the dead-letter stream and acknowledge the message, at once."""
        pipe = redis.pipeline(transaction=True)
        pipe.xadd(self.dead_letter_stream, kept)
        pipe.xack(self.queue_name, self.consumer_group_name, message_id)
        await pipe.execute()

    async def _idle_entries(self, redis: Redis, count: int) -> list[Any]:
        """Up to ``count`` idle entries of the pending list, claimed for this consumer.

        One XAUTOCLAIM looks at no more than ``10 x count`` pending entries, oldest
        first. Starting from the beginning every time, a worker would only ever see the
        oldest entries, which live workers hold (long tasks, renewed), and never a dead
        worker's newer ones. So the scan resumes where the last one stopped, and goes on
        (up to ``RECLAIM_SCANS`` calls) until it finds something or has seen the whole
        list.
        """
        for _ in range(RECLAIM_SCANS):
            answer = await redis.xautoclaim(
                self.queue_name,
                self.consumer_group_name,
                self.consumer_name,
                min_idle_time=self.idle_timeout,
                start_id=self._reclaim_from,
                count=count,
            )
            self._reclaim_from = redis_text(answer[0])
            if answer[1] or self._reclaim_from == "0-0":
                return list(answer[1])
        return []

    async def _deliveries(self, redis: Redis, message_id: str, fields: Any) -> int | None:
        """How often the message was delivered (this reclaim included); None once that
        is more than ``MAX_DELIVERIES``, when it has been moved to the dead-letter
        stream."""
        info = await redis.xpending_range(
            self.queue_name, self.consumer_group_name, min=message_id, max=message_id, count=1
        )
        deliveries = int(info[0]["times_delivered"]) if info else 1
        if deliveries <= MAX_DELIVERIES:
            return deliveries
        await self._dead_letter(redis, message_id, {b"data": fields[b"data"], b"id": message_id})
        record_poison(self, message_id, fields[b"data"], deliveries, self.dead_letter_stream)
        return None

    def _hold(self, stream: str, message_id: str, fields: Any, deliveries: int = 1) -> Delivery:
        delivery = Delivery(self, stream, message_id, fields[b"data"], deliveries)
        self.held[message_id] = delivery
        return delivery

    async def kick_many(self, messages: Sequence[BrokerMessage], *, once: bool = False) -> None:
        """Add every message in one round trip: one script call per target stream
        (:func:`~jobs_service.infrastructure.redis_sends.add_messages`), which costs
        about one command whatever the batch size, where a pipeline of XADDs costs
        10-15 µs of CPU per message. ``once``: add each queueing of a run at most once,
        however often it is sent (a marker kept ``sent_marker_ttl_s``)."""
        ttl = self.sent_marker_ttl_s if once else None
        await add_messages(
            self.connection_pool, messages, self.queue_name, self.maxlen, once_for_s=ttl
        )

    async def ping(self) -> None:
        """Raise unless Redis answers."""
        async with Redis(connection_pool=self.connection_pool) as redis:
            await redis.ping()


def _let_go(deliveries: list[Delivery]) -> None:
    """Stop renewing messages held but never handed to the receiver: one idle timeout
    later they are reclaimed, by this worker or another."""
    for delivery in deliveries:
        delivery.release()
