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
    from collections.abc import AsyncIterator, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["HeldConnection"]


class HeldConnection:
    """One connection of ``engine``'s pool, kept between transactions (one at a time).

    ``autocommit`` keeps it without transactions, for writers whose every write is one
    statement (a round trip instead of three); ``session`` statements run once on each
    new connection (such as ``SET synchronous_commit = off``).
    """

    def __init__(
        self, engine: AsyncEngine, *, autocommit: bool = False, session: Sequence[str] = ()
    ) -> None:
        self._engine = engine
        self._autocommit = autocommit
        self._session = tuple(session)
        self._connection: AsyncConnection | None = None
        #: Whether the last :meth:`begin` ran on a connection an earlier one used.
        self.reused = False

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction (a plain block in ``autocommit`` mode), committed when the
        block ends; on any error it is rolled back and the connection discarded (the
        next transaction opens a new one)."""
        self.reused = self._connection is not None
        connection = self._connection or await self._open()
        try:
            if self._autocommit:
                yield connection
            else:
                async with connection.begin():
                    yield connection
        except BaseException:
            self._connection = None
            await _discard(connection)
            raise

    async def _open(self) -> AsyncConnection:
        connection = await self._engine.connect()
        try:
            if self._autocommit:
                connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            for statement in self._session:
                await connection.exec_driver_sql(statement)
            if not self._autocommit and connection.in_transaction():
                await connection.commit()  # the session statements' implicit transaction
        except BaseException:
            await _discard(connection)
            raise
        self._connection = connection
        return connection

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
