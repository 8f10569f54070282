"""Cancellations across processes, through Redis.

An operator's cancel becomes a :class:`Cancellation` that every worker must learn
before it runs the message, and without asking Redis per task:

- the gateway stores it as ``<prefix>:cancelled:<run_id>`` (expires after
  :data:`CANCELLATION_TTL_S`) and publishes it on ``<prefix>:cancel``;
- each worker's :class:`CancellationFeed` subscribes to the channel and, on every
  (re)connection, reads the stored ones, so a worker that starts later or lost its
  connection for a while still knows every cancellation of the last day.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from redis.asyncio import Redis

from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.background import stop_task

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import ConnectionPool

__all__ = [
    "CANCELLATION_TTL_S",
    "Cancellation",
    "CancellationFeed",
    "cancel_channel",
    "cancellation_key",
    "publish_cancellation",
    "read_cancellation",
    "read_cancellations",
]

#: How long a cancellation is remembered (by Redis and by each worker).
CANCELLATION_TTL_S = 86_400
_log = get_logger("jobs_service.cancellation")
_MAX_BACKOFF_S = 10.0
_PRUNE_EVERY_S = 60.0
_STARTUP_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class Cancellation:
    """Run ``run_id`` is cancelled up to attempt ``upto`` by ``by``.

    No attempt numbered ``upto`` or lower may start, and one that runs is interrupted.
    Neither may an automatic retry numbered ``upto + 1``: the attempt that was running
    when the cancellation was made may have scheduled it just before. An operator's
    retry of a cancelled run sends attempt ``upto + 1`` as a *new* (not automatic)
    message, which the cancellation does not cover.
    """

    run_id: str
    upto: int
    by: str
    at: float

    def covers(self, attempt: int, *, automatic: bool) -> bool:
        """Whether the message of ``attempt`` must not run."""
        return attempt <= self.upto or (automatic and attempt == self.upto + 1)

    @property
    def expires_at(self) -> float:
        """When workers may forget it (epoch seconds)."""
        return self.at + CANCELLATION_TTL_S

    def dumps(self) -> bytes:
        """The JSON stored and published."""
        return orjson.dumps(
            {"run_id": self.run_id, "upto": self.upto, "by": self.by, "at": self.at}
        )

    @classmethod
    def loads(cls, data: bytes | str) -> Cancellation:
        """Parse :meth:`dumps` (raises ``ValueError``/``KeyError``/``TypeError`` on garbage)."""
        value: Any = orjson.loads(data)
        return cls(
            run_id=str(value["run_id"]),
            upto=int(value["upto"]),
            by=str(value["by"]),
            at=float(value["at"]),
        )


def cancel_channel(prefix: str) -> str:
    """The pub/sub channel cancellations are announced on."""
    return f"{prefix}:cancel"


def cancellation_key(prefix: str, run_id: str) -> str:
    """The key that remembers one run's cancellation."""
    return f"{prefix}:cancelled:{run_id}"


async def publish_cancellation(pool: ConnectionPool, prefix: str, token: Cancellation) -> None:
    """Store and announce ``token`` in one round trip."""
    data = token.dumps()
    async with Redis(connection_pool=pool) as redis:
        pipe = redis.pipeline(transaction=False)
        pipe.set(cancellation_key(prefix, token.run_id), data, ex=CANCELLATION_TTL_S)
        pipe.publish(cancel_channel(prefix), data)
        await pipe.execute()


async def read_cancellation(pool: ConnectionPool, prefix: str, run_id: str) -> Cancellation | None:
    """The stored cancellation of one run, if any."""
    async with Redis(connection_pool=pool) as redis:
        data = await redis.get(cancellation_key(prefix, run_id))
    return _parse(data) if data is not None else None


async def read_cancellations(redis: Redis, prefix: str, *, batch: int = 500) -> list[Cancellation]:
    """Every stored cancellation (a SCAN: there are as many as runs cancelled in a day)."""
    found: list[Cancellation] = []
    keys: list[Any] = []
    async for key in redis.scan_iter(match=cancellation_key(prefix, "*"), count=batch):
        keys.append(key)
        if len(keys) >= batch:
            found += _parse_all(await redis.mget(keys))
            keys = []
    if keys:
        found += _parse_all(await redis.mget(keys))
    return found


def _parse(data: bytes | str) -> Cancellation | None:
    try:
        return Cancellation.loads(data)
    except (ValueError, KeyError, TypeError):
        _log.warning("cancellation-unreadable", data=str(data)[:200])
        return None


def _parse_all(values: list[Any]) -> list[Cancellation]:
    parsed = (_parse(value) for value in values if value is not None)
    return [token for token in parsed if token is not None]


class CancellationFeed:
    """Keeps a worker's in-memory cancellations current: pub/sub, plus a full read on
    every (re)connection; ``prune`` runs every minute to forget expired ones."""

    def __init__(
        self,
        pool: ConnectionPool,
        prefix: str,
        *,
        apply: Callable[[Cancellation], None],
        prune: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._prefix = prefix
        self._apply = apply
        self._prune = prune
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self._following = False

    async def start(self) -> None:
        """Subscribe, and return once the stored cancellations are known (or after a
        few seconds if Redis does not answer: the worker cannot fetch work then either,
        and the feed keeps trying)."""
        if self._task is None:
            self._synced = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="cancellation-feed"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), timeout=_STARTUP_WAIT_S)

    async def stop(self) -> None:
        """Unsubscribe."""
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._follow()
            except Exception as exc:  # noqa: BLE001 - a Redis restart must not end the feed
                if self._following:  # it worked until now: reconnect quickly
                    self._following, backoff = False, 0.2
                _log.warning(
                    "cancellation-feed-reconnecting",
                    error_type=type(exc).__name__,
                    error=str(exc)[:300],
                    retry_in_s=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _follow(self) -> None:
        async with (
            Redis(connection_pool=self._pool) as redis,
            redis.pubsub(ignore_subscribe_messages=True) as pubsub,
        ):
            # Subscribe first, then read what is stored: nothing announced in between
            # can be missed.
            await pubsub.subscribe(cancel_channel(self._prefix))
            for stored in await read_cancellations(redis, self._prefix):
                self._apply(stored)
            self._synced.set()
            self._following = True
            pruned_at = time.monotonic()
            while True:
                message = await pubsub.get_message(timeout=_PRUNE_EVERY_S)
                if message is not None and message.get("type") == "message":
                    token = _parse(message["data"])
                    if token is not None:
                        self._apply(token)
                if time.monotonic() - pruned_at >= _PRUNE_EVERY_S:
                    self._prune()
                    pruned_at = time.monotonic()
