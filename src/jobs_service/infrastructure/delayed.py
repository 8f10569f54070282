"""Delayed sends: a message that must reach the queue later (a retry after backoff).

Redis streams have no delayed delivery, so a delayed message waits in a sorted set
``<stream>:delayed`` scored by its due time; every worker moves due messages to the
stream with one Lua script (atomic: a message is moved once however many workers
poll). It is as durable as the stream itself. Without Redis (the embedded mode) the
wait is an event-loop timer in the one process there is.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.background import run_every, stop_task
from jobs_service.infrastructure.redis_broker import StreamBroker
from jobs_service.infrastructure.redis_scripts import MOVE_DUE

if TYPE_CHECKING:
    from taskiq import AsyncBroker
    from taskiq.message import BrokerMessage

__all__ = ["DelayedMover", "delayed_in_process", "delayed_key", "send_later"]

_log = get_logger("jobs_service.delayed")
_timers: set[asyncio.TimerHandle] = set()
_sends: set[asyncio.Task[None]] = set()


def delayed_key(broker: StreamBroker) -> str:
    """The sorted set of delayed messages for ``broker``'s stream."""
    return f"{broker.queue_name}:delayed"


def delayed_in_process() -> int:
    """Messages waiting on this process's timers (the embedded mode's delayed retries)."""
    return len(_timers)


async def send_later(broker: AsyncBroker, message: BrokerMessage, delay_s: float) -> None:
    """Queue ``message`` on ``broker`` in ``delay_s`` seconds."""
    if isinstance(broker, StreamBroker):
        async with Redis(connection_pool=broker.connection_pool) as redis:
            await redis.zadd(delayed_key(broker), {message.message: time.time() + delay_s})
        return
    loop = asyncio.get_running_loop()

    def fire() -> None:
        _timers.discard(handle)
        task = loop.create_task(broker.kick(message))
        _sends.add(task)
        task.add_done_callback(_sends.discard)

    handle = loop.call_later(delay_s, fire)
    _timers.add(handle)


class DelayedMover:
    """Moves due delayed messages to the stream, every ``interval_s``, in a worker."""

    def __init__(self, broker: StreamBroker, *, interval_s: float = 0.25, batch: int = 100) -> None:
        self._broker = broker
        self._interval_s = interval_s
        self._batch = batch
        self._task: asyncio.Task[None] | None = None

    async def move_due(self) -> int:
        """Move what is due now; returns how many messages moved."""
        async with Redis(connection_pool=self._broker.connection_pool) as redis:
            moved = await redis.eval(
                MOVE_DUE,
                2,
                delayed_key(self._broker),
                self._broker.queue_name,
                str(time.time()),
                str(self._batch),
            )
        return int(moved)

    async def move_backlog(self) -> None:
        """Move due messages until fewer than a batch were due."""
        while await self.move_due() >= self._batch:
            pass

    def start(self) -> None:
        """Poll in the background until :meth:`stop`."""
        if self._task is None:
            self._task = run_every("delayed", self._interval_s, self.move_backlog)

    async def stop(self) -> None:
        """Stop polling."""
        await stop_task(self._task)
        self._task = None
