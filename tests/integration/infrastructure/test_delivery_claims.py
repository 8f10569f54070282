"""Claims on ``deliveries``: in flight or stale by the database's clock, fenced by
``attempts``, on PostgreSQL and SQLite."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import Delivery
from jobs_service.infrastructure.repositories import deliveries

pytestmark = pytest.mark.anyio

_WINDOW = timedelta(minutes=5)


async def _claim(database: Database, run_id: str) -> deliveries.Claim:
    async with database.engine.begin() as connection:
        return await deliveries.claim(
            connection, run_id=run_id, channel="teams", target="sales", stale_after=_WINDOW
        )


async def _row(database: Database, run_id: str) -> Delivery:
    async with database.sessions() as session:
        return (await session.scalars(select(Delivery).where(Delivery.run_id == run_id))).one()


async def test_a_claim_in_flight_is_refused_until_the_window_is_over(
    any_database: Database,
) -> None:
    """A second attempt finds the message being sent, and how long until the claim may
    be taken over: the rest of the window, counted on the database's clock."""
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    first = await _claim(any_database, run_id)
    second = await _claim(any_database, run_id)
    assert first.row_id is not None
    assert first.attempts == 1
    assert (second.row_id, second.status) == (None, "sending")
    assert 295 < second.free_in_s <= 300
    row = await _row(any_database, run_id)
    assert (row.status, row.attempts) == ("sending", 1)
    assert row.created_at <= row.updated_at


async def test_a_stale_claim_is_taken_over_and_its_first_holder_is_fenced_out(
    any_database: Database,
) -> None:
    """A claim six minutes old by the database's clock belongs to an attempt that died:
    the next attempt takes it over. The first one's late failure cannot undo that; the
    send recorded, a third attempt finds it sent."""
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    first = await _claim(any_database, run_id)
    claimed_at = (await _row(any_database, run_id)).updated_at
    async with any_database.engine.begin() as connection:
        await connection.execute(
            update(Delivery)
            .where(Delivery.run_id == run_id)
            .values(updated_at=claimed_at - timedelta(minutes=6))
        )
    second = await _claim(any_database, run_id)
    assert (second.row_id, second.attempts) == (first.row_id, 2)
    async with any_database.engine.begin() as connection:
        await deliveries.mark_failed(connection, first, error={"type": "X", "message": "late"})
    fenced = await _row(any_database, run_id)
    async with any_database.engine.begin() as connection:
        await deliveries.mark_sent(connection, second, provider_id="m-1")
    third = await _claim(any_database, run_id)
    row = await _row(any_database, run_id)
    assert (fenced.status, fenced.attempts, fenced.error) == ("sending", 2, None)
    assert fenced.updated_at > claimed_at  # stamped anew by the takeover
    assert (third.row_id, third.status, third.free_in_s) == (None, "sent", 0.0)
    assert (row.status, row.provider_id, row.attempts) == ("sent", "m-1", 2)
    assert row.sent_at is not None
    assert row.sent_at >= fenced.updated_at
