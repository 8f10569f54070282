"""The async engine and session factory of the run-history database."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from jobs_service.core.errors import ConfigurationError
from jobs_service.infrastructure.documents import column_json
from jobs_service.infrastructure.held_connection import HeldConnection

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jobs_service.core.settings import DatabaseSettings

__all__ = ["Database", "database_error_chain", "describe_database_error", "sqlite_path"]


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other databases and ``:memory:``."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the gateway read while the worker writes; busy_timeout turns lock
    # contention into a short wait instead of "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    """Owns one engine; ``sessions()`` hands out short-lived sessions."""

    def __init__(self, url: str, settings: DatabaseSettings) -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        kwargs: dict[str, Any] = {"echo": settings.echo}
        if self.dialect == "sqlite":
            path = sqlite_path(url)
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    msg = f"database_url: cannot create {path.parent}: {exc.strerror}"
                    raise ConfigurationError(msg) from exc
            kwargs["connect_args"] = {"timeout": settings.connect_timeout_s}
        else:
            kwargs.update(
                pool_size=settings.pool_size,
                max_overflow=settings.max_overflow,
                pool_timeout=settings.pool_timeout_s,
                pool_pre_ping=True,
                connect_args={"timeout": settings.connect_timeout_s},
                # NUL characters and lone surrogates in outside text (an error a
                # provider answered) would make a row unstorable: see documents.
                json_serializer=column_json,
            )
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )
        self._held: list[HeldConnection] = []

    def hold(
        self, *, autocommit: bool = False, session: Sequence[str] = (), keyed: bool = False
    ) -> HeldConnection:
        """A connection kept between a busy writer's writes (see :class:`HeldConnection`);
        :meth:`close` gives it back.

        ``keyed``: every statement on it finds its rows by key (a batch of run ids).
        Such a writer prepares its statement once and PostgreSQL soon settles on one
        generic plan for it, made while the history was small: a scan of the whole
        table, filtered by the batch's keys. It keeps that plan as the table grows; at
        5,500 runs a 50-run flush cost 6 ms of database CPU that way, and more with
        every run. On PostgreSQL such a connection plans without sequential scans, so
        its statements cost the same index lookups at any size.
        """
        if keyed and self.dialect == "postgresql":
            session = (*session, "SET enable_seqscan = off")
        held = HeldConnection(self.engine, autocommit=autocommit, session=session)
        self._held.append(held)
        return held

    async def close(self) -> None:
        """Give back the kept connections and close every pooled one."""
        held, self._held = self._held, []
        for connection in held:
            await connection.aclose()
        await self.engine.dispose()


def describe_database_error(exc: BaseException) -> str:
    """The driver's own error in one line, its type and first line, never ``str(exc)``:
    SQLAlchemy appends the statement, its parameters and a "Background on this error"
    link to it, and names its own wrapper class rather than the driver's error."""
    cause = database_error_chain(exc)[-1]
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else 'no detail'}"[:300]


def database_error_chain(exc: BaseException) -> list[BaseException]:
    """``exc``, what SQLAlchemy wrapped (``orig``: the dialect's adapter), and what that
    was raised from (asyncpg's ``InvalidCatalogNameError``, say), outermost first. The
    SQLSTATE and the driver's message are on the inner ones."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return seen
