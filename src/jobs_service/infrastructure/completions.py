"""Finish many stream messages in one round trip: save their results, then acknowledge.

Saving a result (SET) and acknowledging its message (XACK) cost a Redis round trip each,
and, in redis-py, 10-20 µs of CPU apiece: as much as running a small task. Here finished
messages share one call of a Lua script (``redis_scripts.FINISH_MESSAGES``) that stores
the results and then acknowledges the messages, atomically: a message is never
acknowledged without its result, and a batch costs about one command.

A batch is sent when ``max_batch`` messages wait, or when its window ends: 5 ms while
more messages are coming (``more_coming``: the worker has others running or waiting for
a slot when the batch's first one finishes), 1 ms otherwise. A busy worker so makes a
few large calls (W3: twelve messages a call, where a 1 ms window made four: a third of
the round trips). An idle one keeps the 1 ms window: sending at once looked worse for
W2's tail on a slow machine, and made no difference on a fast one (see the performance
page).

A message is acknowledged only once its run's outcome is in the database: while a
``gate`` is set (the worker's run recorder), a finished message waits, *held back*,
until the recorder has written every event recorded before the message finished (its
run's last state among them), and goes out with the batch that flush releases. A worker
that dies in between leaves the message pending, so it runs again elsewhere and is
recorded there; the outcome of a run whose message was acknowledged is never only in a
dead worker's memory. While the database is down, finished messages stay held back
(their leases renewed) and the receiver stops reading once too many wait.

The worker does not wait for the confirmation before it starts its next message; the
message stays *held* (its lease renewed, see ``stream_upkeep``) until Redis confirmed
the XACK. A round trip that fails on the connection is retried with backoff, so a Redis
restart re-runs nothing; one Redis refuses (the group is gone) is given up, and its
messages are re-delivered after the idle timeout. Either way nothing is lost: a message
unacknowledged is a message re-run, never one dropped. ``drain`` waits for everything
in flight, for a graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Protocol

from redis.asyncio import Redis

from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.redis_scripts import FINISH_MESSAGES
from jobs_service.infrastructure.redis_values import REDIS_UNREACHABLE

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import ConnectionPool

__all__ = ["Completions", "RecordGate", "ResultEntry"]

#: A result to store with the acknowledgement: key, value and time to live in seconds.
ResultEntry = tuple[str, bytes, int | None]

_log = get_logger("jobs_service.broker")
#: How long a batch's first message waits for others: while more are coming, otherwise.
_BUSY_WINDOW_S = 0.005
_WINDOW_S = 0.001
_MAX_BACKOFF_S = 5.0
#: Of a drain's time, what is kept for sending acknowledgements after the last flush.
_ACK_BUDGET_S = 2.0


class RecordGate(Protocol):
    """What acknowledgements wait for: the run recorder's count of events recorded, and
    how many of the first of them are written."""

    recorded: int
    written: int

    async def wait_flushed(self) -> None:
        """Return once everything recorded so far is written."""
        ...


class _Item:
    __slots__ = ("done", "message_id", "result", "stream")

    def __init__(
        self,
        stream: str,
        message_id: str,
        result: ResultEntry | None,
        done: asyncio.Future[None] | None,
    ) -> None:
        self.stream = stream
        self.message_id = message_id
        self.result = result
        self.done = done


class Completions:
    """Coalesces result saves and acknowledgements of one consumer group."""

    def __init__(
        self,
        pool: ConnectionPool,
        group: str,
        *,
        on_settled: Callable[[str], None],
        max_batch: int = 200,
        more_coming: Callable[[], bool] | None = None,
        window_s: float = _WINDOW_S,
        busy_window_s: float = _BUSY_WINDOW_S,
    ) -> None:
        self._redis = Redis(connection_pool=pool)
        self._script = self._redis.register_script(FINISH_MESSAGES)
        self._group = group
        self._on_settled = on_settled
        self._max_batch = max_batch
        #: Whether other messages will finish soon (the worker's receiver sets it);
        #: unset, never: every batch has the short window.
        self.more_coming: Callable[[], bool] = more_coming or _never
        self._window_s, self._busy_window_s = window_s, busy_window_s
        self._pending: list[_Item] = []
        #: When set, a finished message is acknowledged only once the events recorded
        #: before it finished are written (see the module docstring).
        self.gate: RecordGate | None = None
        #: Finished messages waiting for the recorder: (events recorded then, item),
        #: in the order they finished.
        self._held_back: deque[tuple[int, _Item]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.round_trips = 0

    @property
    def in_flight(self) -> int:
        """Completions not confirmed yet."""
        return (
            len(self._held_back)
            + len(self._pending)
            + sum(1 for task in self._flushes if not task.done())
        )

    @property
    def held_back(self) -> int:
        """Finished messages waiting for their runs' records to be written."""
        return len(self._held_back)

    def complete(self, stream: str, message_id: str, result: ResultEntry | None = None) -> None:
        """Store ``result`` (if any) and acknowledge the message, without waiting: once
        the run recorder has written what was recorded until now, if there is a gate."""
        item = _Item(stream, message_id, result, None)
        gate = self.gate
        if gate is not None and gate.recorded > gate.written:
            self._held_back.append((gate.recorded, item))
        else:
            self._add(item)

    def records_written(self, written: int) -> None:
        """The recorder wrote every event up to number ``written``: send the messages
        that waited for them, now (the flush was their batching window)."""
        held_back = self._held_back
        while held_back and held_back[0][0] <= written:
            self._pending.append(held_back.popleft()[1])
            if len(self._pending) >= self._max_batch:
                self._start_flush()
        self._start_flush()

    async def complete_and_wait(
        self, stream: str, message_id: str, result: ResultEntry | None = None
    ) -> None:
        """Like :meth:`complete`, returning once Redis confirmed it (or raising)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._add(_Item(stream, message_id, result, done))
        await done

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Send what waits and wait for every round trip in flight; False on timeout.

        Messages held back for the recorder wait for its flush (within ``timeout_s``);
        those whose records could not be written (the database is down) are left
        unacknowledged and let go, so another worker runs them again.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        if self._held_back and self.gate is not None:
            # Leave part of the time for the acknowledgements the flush releases.
            wait_s = None if timeout_s is None else max(0.0, timeout_s - _ACK_BUDGET_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gate.wait_flushed(), timeout=wait_s)
            self.records_written(self.gate.written)
        if self._held_back:
            _log.warning("completions-unrecorded", messages=len(self._held_back))
            while self._held_back:
                self._on_settled(self._held_back.popleft()[1].message_id)
        if deadline is not None:
            timeout_s = max(0.0, deadline - loop.time())
        self._start_flush()
        tasks = set(self._flushes)
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        if pending:
            _log.warning("completions-abandoned", batches=len(pending))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            return False
        return True

    async def aclose(self) -> None:
        """Release the client (after :meth:`drain`)."""
        with contextlib.suppress(*REDIS_UNREACHABLE):
            await self._redis.aclose()

    def _add(self, item: _Item) -> None:
        self._pending.append(item)
        if len(self._pending) >= self._max_batch:
            self._start_flush()
        elif self._timer is None:
            window = self._busy_window_s if self.more_coming() else self._window_s
            self._timer = asyncio.get_running_loop().call_later(window, self._start_flush)

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[_Item]) -> None:
        try:
            await self._send_until_done(batch)
        except Exception as exc:  # noqa: BLE001 - handed to every waiter
            _log.error("completions-failed", messages=len(batch), error=str(exc)[:300])
            self._settle(batch, exc)
            return
        except BaseException as exc:  # cancelled (an abandoned drain): left pending
            self._settle(batch, exc)
            raise
        self.round_trips += 1
        self._settle(batch, None)

    async def _send_until_done(self, batch: list[_Item]) -> None:
        backoff = 0.1
        groups = _by_stream_and_ttl(batch)
        while True:
            try:
                for (stream, ttl_s), items in groups.items():
                    await self._finish(stream, ttl_s, items)
            except REDIS_UNREACHABLE as exc:
                # Still held (leases renewed): retry rather than let them be re-run.
                # Both steps repeat safely (SET and XACK are idempotent).
                _log.warning(
                    "completions-retrying",
                    messages=len(batch),
                    error=str(exc)[:300],
                    retry_in_s=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            else:
                return

    async def _finish(self, stream: str, ttl_s: int | None, items: list[_Item]) -> None:
        """One script call: store the results, then XACK (atomically)."""
        keys: list[str] = [stream]
        values: list[bytes] = []
        for item in items:
            if item.result is not None:
                keys.append(item.result[0])
                values.append(item.result[1])
        ids = [item.message_id for item in items]
        ttl = "" if ttl_s is None else str(ttl_s)
        await self._script(keys=keys, args=[self._group, ttl, *values, *ids])

    def _settle(self, batch: list[_Item], error: BaseException | None) -> None:
        for item in batch:
            # Acknowledged, or given up: either way this worker stops renewing it.
            self._on_settled(item.message_id)
            done = item.done
            if done is None or done.done():
                continue
            if error is None:
                done.set_result(None)
            elif isinstance(error, Exception):
                done.set_exception(error)
            else:
                done.cancel()


def _by_stream_and_ttl(batch: list[_Item]) -> dict[tuple[str, int | None], list[_Item]]:
    groups: dict[tuple[str, int | None], list[_Item]] = {}
    for item in batch:
        ttl_s = item.result[2] if item.result is not None else None
        groups.setdefault((item.stream, ttl_s), []).append(item)
    return groups


def _never() -> bool:
    return False
