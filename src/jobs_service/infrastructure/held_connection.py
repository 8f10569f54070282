"""A pooled connection kept by one busy writer between its transactions.

Every checkout from the engine's pool is checked with ``pool_pre_ping`` (on asyncpg a
transaction around a ``SELECT``: three round trips) and reset on return (one more). A
writer that commits a batch every few milliseconds, such as webhook ingestion, would
pay that for each batch, so it keeps one connection instead and only pays for its own
``BEGIN`` and ``COMMIT``.

What pre-ping did — noticing a connection the database dropped (a restart, a failover,
an idle timeout) — happens here after the fact: the first transaction on a dead
connection fails, the connection is discarded, and :meth:`HeldConnection.begin` reports
it through :attr:`HeldConnection.reused`, so the caller can retry once on a fresh one.
"""

from __future__ import annotations

import contextlib
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["HeldConnection"]


class HeldConnection:
    """One connection of ``engine``'s pool, kept between transactions (one at a time)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        #: Whether the last :meth:`begin` ran on a connection an earlier one used.
        self.reused = False

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction, committed when the block ends; on any error it is rolled back
        and the connection discarded (the next transaction opens a new one)."""
        self.reused = self._connection is not None
        if self._connection is None:
            self._connection = await self._engine.connect()
        connection = self._connection
        try:
            async with connection.begin():
                yield connection
        except BaseException:
            self._connection = None
            await _discard(connection)
            raise

    async def aclose(self) -> None:
        """Give the connection back to the pool."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()


async def _discard(connection: AsyncConnection) -> None:
    """Close a connection whose state is unknown without returning it to the pool."""
    with contextlib.suppress(Exception):
        await connection.invalidate()
    with contextlib.suppress(Exception):
        await connection.close()
