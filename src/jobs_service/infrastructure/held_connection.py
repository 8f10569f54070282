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

A writer whose every write is one PostgreSQL statement can also skip SQLAlchemy's
execution layer (:meth:`HeldConnection.fetch`): a recorder flush of eleven runs cost its
worker 330-354 µs of CPU through SQLAlchemy, its asyncpg adapter and a transaction's two
extra round trips, and costs 110-127 µs this way; those microseconds block the worker's
event loop while the next run's message waits.
"""

from __future__ import annotations

import contextlib
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["SERVER_GONE", "HeldConnection"]


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
        self._driver: Any = None  # the asyncpg connection under ``_connection``, if any
        #: Whether the last :meth:`begin` or :meth:`fetch` ran on a connection an
        #: earlier one used.
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
            self._connection = self._driver = None
            await _discard(connection)
            raise

    async def fetch(self, statement: str, *parameters: Any) -> list[Sequence[Any]]:
        """Run one statement (``$n`` placeholders) as its own transaction on the
        driver's connection and return its rows.

        Only for ``autocommit`` connections to PostgreSQL through asyncpg. The driver's
        errors arrive as SQLAlchemy's (``IntegrityError``, ``DataError``, or
        ``DBAPIError`` with ``connection_invalidated`` for a lost connection), their
        ``orig`` the driver's error with its ``sqlstate``, as from :meth:`begin`; the
        connection is discarded, as there.
        """
        if not self._autocommit:
            msg = "HeldConnection.fetch needs an autocommit connection"
            raise RuntimeError(msg)
        self.reused = self._connection is not None
        connection = self._connection or await self._open()
        driver = self._driver
        if driver is None:
            driver = (await connection.get_raw_connection()).driver_connection
            if not isinstance(driver, asyncpg.Connection):
                msg = f"HeldConnection.fetch needs asyncpg, not {type(driver).__name__}"
                raise TypeError(msg)
            self._driver = driver
        try:
            rows: list[Sequence[Any]] = await driver.fetch(statement, *parameters)
        except BaseException as exc:
            self._connection = self._driver = None
            lost = driver.is_closed()
            await _discard(connection)
            if isinstance(exc, Exception) and not isinstance(exc, DBAPIError):
                raise _as_dbapi_error(statement, exc, lost=lost) from exc
            raise
        return rows

    def abandon(self) -> None:
        """Close the driver's connection under a :meth:`fetch` that is not answered (a
        server that is gone without a reset): the fetch fails at once, as on a lost
        connection, and the next one opens a new connection."""
        driver = self._driver
        if driver is not None:
            driver.terminate()

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
        self._driver = None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()


async def _discard(connection: AsyncConnection) -> None:
    """Close a connection whose state is unknown without returning it to the pool."""
    with contextlib.suppress(Exception):
        await connection.invalidate()
    with contextlib.suppress(Exception):
        await connection.close()


#: SQLSTATEs of a server that is going away or not there yet: the connection is lost.
SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})


def _as_dbapi_error(statement: str, exc: Exception, *, lost: bool) -> DBAPIError:
    """The SQLAlchemy error that :meth:`HeldConnection.begin`'s callers already handle
    for a driver error: the database refusing the data (SQLSTATE class 22 or 23) or an
    encoding failure, a lost connection (``lost``: the driver found it closed; a server
    that ended it can also leave the driver's protocol in a state it refuses to use), or
    anything else the database said."""
    state = str(getattr(exc, "sqlstate", None) or "")
    if state.startswith("23"):
        return IntegrityError(statement, None, exc)
    if state.startswith("22") or (not state and isinstance(exc, (TypeError, ValueError))):
        return DataError(statement, None, exc)
    gone = (
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        asyncpg.PostgresConnectionError,
        OSError,
    )
    if lost or isinstance(exc, gone) or state in SERVER_GONE:
        return OperationalError(statement, None, exc, connection_invalidated=True)
    return DBAPIError(statement, None, exc)
