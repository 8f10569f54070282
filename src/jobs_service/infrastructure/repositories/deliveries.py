"""Queries on ``deliveries``: claim a message before sending it, record how it went.

A claim moves the row to ``sending`` in one guarded UPDATE, so two attempts of the same
run (a redelivered message while the first still runs) cannot both send. A ``sending``
row older than ``stale_after`` belongs to an attempt that died mid-send and may be
claimed again: at-least-once, with the window as narrow as one HTTP call.

Every time here is the database's clock, never a worker's: a claim is stamped, and its
age judged, by the one clock all attempts share. With each worker's own, a worker whose
clock ran minutes ahead found a live claim stale and sent the message a second time,
and one running behind left a dead claim alone for longer than the window.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Interval, and_, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from jobs_service.core.text import portable
from jobs_service.infrastructure.column_types import UTCDateTime
from jobs_service.infrastructure.models import Delivery, column_length

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime, timedelta

    from sqlalchemy import ColumnElement
    from sqlalchemy.engine import Dialect
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = ["Claim", "claim", "delivery_key", "list_for_run", "mark_failed", "mark_sent"]

_PROVIDER_ID_LENGTH = column_length(Delivery, "provider_id")
#: SQLite's current time as the text ``UTCDateTime`` stores there (naive UTC, six digits
#: of microseconds: ``%f`` is seconds with milliseconds), so that stored times and the
#: clock compare as text in time order and read back as datetimes.
_SQLITE_NOW = "%Y-%m-%d %H:%M:%f000"


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of a claim: ``row_id`` set when this attempt may send.

    ``attempts`` fences the later update: a claim that lost its lease to another
    attempt cannot overwrite that attempt's outcome. ``free_in_s`` is how long until an
    in-flight claim of another attempt may be taken over.
    """

    row_id: int | None
    status: str
    idempotency_key: str
    attempts: int = 0
    free_in_s: float = 0.0


def delivery_key(run_id: str, channel: str, target: str) -> str:
    """A stable key of one message, sent to providers that deduplicate."""
    digest = hashlib.sha256(f"{channel}\x00{target}".encode()).hexdigest()[:24]
    return f"{run_id}-{digest}"[:64]


async def claim(
    connection: AsyncConnection,
    *,
    run_id: str,
    channel: str,
    target: str,
    stale_after: timedelta,
) -> Claim:
    """Create the row if needed and take it for sending unless it is sent or in flight
    (``sending``, and younger than ``stale_after`` by the database's clock)."""
    key = delivery_key(run_id, channel, target)
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    await connection.execute(
        insert(Delivery)
        .values(
            run_id=run_id,
            channel=channel,
            target=target,
            status="pending",
            idempotency_key=key,
            attempts=0,
            created_at=_now(connection.dialect),
            updated_at=_now(connection.dialect),
        )
        .on_conflict_do_nothing(index_elements=["run_id", "channel", "target"])
    )
    same = and_(Delivery.run_id == run_id, Delivery.channel == channel, Delivery.target == target)
    claimable = or_(
        Delivery.status.in_(("pending", "failed")),
        and_(
            Delivery.status == "sending",
            Delivery.updated_at < _before(connection.dialect, stale_after),
        ),
    )
    taken = await connection.execute(
        update(Delivery)
        .where(same, claimable)
        .values(
            status="sending", attempts=Delivery.attempts + 1, updated_at=_now(connection.dialect)
        )
        .returning(Delivery.id, Delivery.attempts)
    )
    row = taken.one_or_none()
    if row is not None:
        return Claim(row[0], "sending", key, attempts=row[1])
    status, updated_at, now = (
        await connection.execute(
            select(Delivery.status, Delivery.updated_at, _now(connection.dialect)).where(same)
        )
    ).one()
    free_in = (updated_at + stale_after - now).total_seconds() if status == "sending" else 0.0
    return Claim(None, status, key, free_in_s=max(free_in, 0.0))


def _held(claim: Claim) -> Any:
    return and_(
        Delivery.id == claim.row_id,
        Delivery.status == "sending",
        Delivery.attempts == claim.attempts,
    )


async def mark_sent(connection: AsyncConnection, claim: Claim, *, provider_id: str | None) -> None:
    """The provider accepted the message (a sent message is sent, even if the lease
    was taken over meanwhile: the other attempt then finds it sent). The provider's id
    is outside text: a NUL in it is replaced (``core.text.portable``) and it is cut to
    the column, so that no answer can keep the send from being recorded."""
    if provider_id is not None:
        provider_id = portable(provider_id)[:_PROVIDER_ID_LENGTH]
    await connection.execute(
        update(Delivery)
        .where(Delivery.id == claim.row_id, Delivery.status != "sent")
        .values(
            status="sent",
            provider_id=provider_id,
            error=None,
            updated_at=_now(connection.dialect),
            sent_at=_now(connection.dialect),
        )
    )


async def mark_failed(connection: AsyncConnection, claim: Claim, *, error: dict[str, str]) -> None:
    """The send failed; a retry can claim the row again. Only while this claim holds it."""
    await connection.execute(
        update(Delivery)
        .where(_held(claim))
        .values(status="failed", error=error, updated_at=_now(connection.dialect))
    )


def _now(dialect: Dialect) -> ColumnElement[datetime]:
    """The database's current time: the start of the statement, the same wherever the
    statement reads it (PostgreSQL's ``now()`` would be its transaction's start)."""
    if dialect.name == "postgresql":
        return func.statement_timestamp(type_=UTCDateTime())
    return func.strftime(_SQLITE_NOW, "now", type_=UTCDateTime())


def _before(dialect: Dialect, period: timedelta) -> ColumnElement[datetime]:
    """The database's time ``period`` ago."""
    if dialect.name == "postgresql":
        return _now(dialect) - literal(period, Interval())
    return func.strftime(
        _SQLITE_NOW, "now", f"{-period.total_seconds()} seconds", type_=UTCDateTime()
    )


async def list_for_run(session: AsyncSession, run_ids: Sequence[str]) -> list[Delivery]:
    """The deliveries of some runs, oldest first."""
    query = select(Delivery).where(Delivery.run_id.in_(run_ids)).order_by(Delivery.id)
    return list((await session.execute(query)).scalars())
