"""Queued runs whose send the broker never confirmed (``job_runs.send_unconfirmed_at``).

Such a run's message may be in the stream or not: its send was written to Redis and no
answer came. It stays ``queued``, marked, until a send of it is confirmed (sends of
these runs are deduplicated per queueing in Redis, so sending it again is safe).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select, update

from jobs_service.infrastructure.models import JobRun

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["clear_unconfirmed", "mark_unconfirmed", "unconfirmed_since"]


async def mark_unconfirmed(
    connection: AsyncConnection, run_ids: Sequence[str], *, at: datetime
) -> None:
    """Mark the still ``queued`` runs ``run_ids`` as sent without confirmation."""
    await connection.execute(
        update(JobRun)
        .where(JobRun.run_id.in_(list(run_ids)), JobRun.status == "queued")
        .values(send_unconfirmed_at=at)
    )


async def clear_unconfirmed(connection: AsyncConnection, run_ids: Sequence[str]) -> None:
    """Unmark ``run_ids``: a send of each was confirmed, or a worker has started it."""
    await connection.execute(
        update(JobRun)
        .where(JobRun.run_id.in_(list(run_ids)), JobRun.send_unconfirmed_at.is_not(None))
        .values(send_unconfirmed_at=None)
    )


async def unconfirmed_since(
    connection: AsyncConnection, before: datetime, *, limit: int
) -> list[str]:
    """The run ids of up to ``limit`` runs marked before ``before``, oldest mark first
    (through the partial index of marked runs: none, or a handful, normally)."""
    rows = await connection.execute(
        select(JobRun.run_id)
        .where(JobRun.send_unconfirmed_at.is_not(None), JobRun.send_unconfirmed_at < before)
        .order_by(JobRun.send_unconfirmed_at)
        .limit(limit)
    )
    return [run_id for (run_id,) in rows]
