"""Ids of webhook events, taken from the database ahead of their events (PostgreSQL).

An event's run carries the event's id in its arguments, so with ids assigned by the
INSERT the run can only be prepared once the events are written: a transaction of four
round trips (begin, events, runs, commit). Knowing the ids first lets one statement
write a whole batch, events and runs, as its own transaction: one round trip. The ids
still come from the table's own sequence, in blocks, as a sequence ``CACHE`` would hand
them out.

Ids therefore follow the order events were received in one gateway process, but not
across processes: each takes its own block. A block is dropped once it is a second old
(its ids are never used: a gap, as a rolled-back insert leaves), so an event id is never
more than about a second "older" than its neighbours.

A block is as large as the last second asked for, up to ``block``: one that ran out
doubles the next, one that grew old sizes the next to what was used of it. A busy
gateway fetches a block of 256 for every 256 events; a quiet one fetches just the ids of
each batch (two round trips then, still half the transaction's four) and leaves no gaps
behind it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from jobs_service.infrastructure.repositories import webhooks as repo

if TYPE_CHECKING:
    from jobs_service.infrastructure.held_connection import HeldConnection

__all__ = ["EventIdPool"]


class EventIdPool:
    """Hands out ``webhook_events`` ids fetched in blocks of up to ``block``."""

    def __init__(self, *, block: int = 256, max_age_s: float = 1.0) -> None:
        self._block = block
        self._max_age = max_age_s
        self._ids: list[int] = []
        self._fetched_at = 0.0
        self._used = 0  # ids handed out of the current block

    @property
    def available(self) -> int:
        """Ids held (some may be dropped as too old at the next :meth:`take`)."""
        return len(self._ids)

    async def take(self, held: HeldConnection, count: int) -> list[int]:
        """``count`` unused ids, fetching a block on ``held`` (an autocommit connection)
        when too few are held (the few left over are dropped then, so the ids held are
        always one block's)."""
        expired = time.monotonic() - self._fetched_at > self._max_age
        if expired:
            self._ids = []
        if len(self._ids) >= count:
            taken, self._ids = self._ids[:count], self._ids[count:]
            self._used += count
            return taken
        size = max(count, min(self._block, self._used if expired else 2 * self._used))
        fetched = await repo.allocate_event_ids(held, size)
        # Taken from this block alone: another writer may have used the pool meanwhile.
        self._ids, self._fetched_at, self._used = fetched[count:], time.monotonic(), count
        return fetched[:count]
