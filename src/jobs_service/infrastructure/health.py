"""Dependency checks shared by ``GET /ready`` and the ``check_system_health`` job."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from sqlalchemy import text

from jobs_service.core.errors import JobsError
from jobs_service.core.ports import CheckResult
from jobs_service.infrastructure.database import describe_database_error
from jobs_service.infrastructure.schema import read_schema

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from taskiq import AsyncBroker

    from jobs_service.infrastructure.database import Database

__all__ = ["check_broker", "check_database"]

_TIMEOUT_S = 3.0


async def _timed(
    name: str,
    probe: Callable[[], Awaitable[str]],
    describe: Callable[[BaseException], str] = lambda exc: f"{type(exc).__name__}: {exc}",
) -> CheckResult:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(probe(), timeout=_TIMEOUT_S)
    except TimeoutError:
        return CheckResult(name, False, _ms(started), f"no answer within {_TIMEOUT_S:g} s")
    except JobsError as exc:  # written for the operator: the message is the detail
        return CheckResult(name, False, _ms(started), str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure is the check's answer
        return CheckResult(name, False, _ms(started), describe(exc)[:300])
    return CheckResult(name, True, _ms(started), detail)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def check_database(database: Database, *, schema: bool = False) -> CheckResult:
    """``SELECT 1`` on a pooled connection; with ``schema``, the database's revision
    instead, which fails the check when the schema is missing or older than this
    release's (see :mod:`~jobs_service.infrastructure.schema`). A database that fails
    is the driver's message in one line (SQLAlchemy's own text adds the statement and a
    link)."""

    async def probe() -> str:
        if schema:
            state = await read_schema(database)
            if state.error is not None:
                raise state.error
            return f"{database.dialect}, {state.describe()}"
        async with database.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return database.dialect

    return await _timed("database", probe, describe_database_error)


async def check_broker(broker: AsyncBroker) -> CheckResult:
    """PING Redis; the in-memory broker is always up."""
    ping = getattr(broker, "ping", None)

    async def probe() -> str:
        if ping is None:
            return "in-memory"
        await ping()
        return "redis"

    return await _timed("broker", probe)
