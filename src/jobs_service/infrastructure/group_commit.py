"""Group commit: concurrent callers share one write instead of paying for one each.

A webhook is answered 202 only once its event is committed, and a commit costs a few
round trips and a WAL flush whatever it holds. Under load, dozens of requests wait for
their commit at the same time; handing all of them to one transaction (and their runs
to one pipelined send) costs about what one of them did alone.

Callers :meth:`GroupCommit.submit` an item and wait. A writer task takes everything
waiting (up to ``max_batch`` items), hands the list to ``write`` and gives each caller
its own result; callers arriving meanwhile form the next batch, so the batch size
follows the load with no timer: a lone request is written at once, a crowd shares.
Up to ``writers`` batches are written at once, so one batch's round trips to the
database overlap with the next one's instead of holding it up.

If ``write`` raises, every caller of that batch gets the exception — nothing of a
failed batch was answered as done. A ``write`` that can tell one item's failure from the
others' success (writing them one by one after the batch was refused) returns
:class:`Failed` for that item: its caller gets the error, the others their results. A
caller that stops waiting (its request was cancelled) does not stop the batch: the
others still get their answers.

With ``timeout_s`` a caller waits that long at most, in the queue and in its batch
together, then gets :class:`TimeoutError`; its item is still written when its batch
runs. Each item carries its deadline and one timer watches them all, armed for the
nearest one when none is (a timer, or ``asyncio.timeout``, per caller cost 2-6 µs of
CPU each).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["Failed", "GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Failed:
    """What ``write`` returns for an item that failed on its own: its caller gets
    ``error`` raised."""

    error: Exception


class GroupCommit(Generic[T, R]):
    """Batches concurrent ``submit`` calls into calls of ``write``, at most ``writers`` at
    a time.

    ``write`` gets the items of a batch in submission order and returns one result per
    item, in the same order (a :class:`Failed` for an item that failed alone). With
    ``writers`` > 1 a batch starts while another waits on the database: its round trips
    overlap instead of queueing (``write`` must then be safe to run concurrently with
    itself).
    """

    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[Sequence[R | Failed]]],
        *,
        max_batch: int = 500,
        writers: int = 1,
        timeout_s: float | None = None,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._max_writers = writers
        self._timeout_s = timeout_s
        #: (item, its caller's future, its deadline) not yet taken into a batch, and
        #: those of the batches being written.
        self._waiting: list[tuple[T, asyncio.Future[R], float]] = []
        self._batches: dict[int, list[tuple[T, asyncio.Future[R], float]]] = {}
        self._writers: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        """Items submitted and not yet taken into a batch."""
        return len(self._waiting)

    async def submit(self, item: T) -> R:
        """Wait until ``item`` is written with its batch; its result, or the batch's error."""
        [result] = await self.submit_many([item])
        return result

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """:meth:`submit` for several items at once: a future each, not a task each.

        The items keep their order (they may span batches); the first error among their
        batches is raised.
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = [loop.create_future() for _ in items]
        if not futures:
            return []
        if self._timeout_s is None:
            deadline = math.inf
        else:
            deadline = loop.time() + self._timeout_s
            if self._watchdog is None:
                self._watchdog = loop.call_at(deadline, self._expire, loop)
        self._waiting.extend(zip(items, futures, repeat(deadline)))
        if len(self._writers) < self._max_writers:
            self._writers.add(asyncio.create_task(self._write_all(), name="group-commit"))
        if len(futures) == 1:  # a lone submit (the hot path) without gather's wrapper
            return [await futures[0]]
        return list(await asyncio.gather(*futures))

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the callers whose deadline has passed; wake again at the nearest one
        left (or at the next submit's, armed by that submit)."""
        self._watchdog = None
        now = loop.time()
        nearest = math.inf
        for entries in (self._waiting, *self._batches.values()):
            for _, future, deadline in entries:
                if future.done():
                    continue
                if deadline <= now:
                    future.set_exception(TimeoutError(f"not written within {self._timeout_s:g} s"))
                else:
                    nearest = min(nearest, deadline)
        if nearest < math.inf:
            self._watchdog = loop.call_at(nearest, self._expire, loop)

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                await self._write_batch(batch)
        finally:
            # Synchronously (not in a done callback): a submit right after this writer
            # saw nothing waiting must find room to start another.
            self._writers.discard(asyncio.current_task())
            if not self._writers:
                # Only left non-empty when writers were cancelled: nobody would write them.
                waiting, self._waiting = self._waiting, []
                for _, future, _ in waiting:
                    future.cancel()

    async def _write_batch(self, batch: list[tuple[T, asyncio.Future[R], float]]) -> None:
        self._batches[id(batch)] = batch  # watched for deadlines while it is written
        try:
            await self._write_and_answer(batch)
        finally:
            del self._batches[id(batch)]

    async def _write_and_answer(self, batch: list[tuple[T, asyncio.Future[R], float]]) -> None:
        try:
            results = await self._write([item for item, _, _ in batch])
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (shutdown): the callers must not wait forever
            for _, future, _ in batch:
                future.cancel()
            raise
        if len(results) != len(batch):
            error = RuntimeError(f"write returned {len(results)} results for {len(batch)} items")
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future, _), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Failed):
                future.set_exception(result.error)
            else:
                future.set_result(result)
