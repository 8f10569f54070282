"""Handing runs to the broker: the producer middlewares on each message, one round trip
for the lot, and what a failed send means for the runs (refused: not queued;
unconfirmed: perhaps queued)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete
from taskiq import TaskiqMessage, TaskiqMiddleware
from taskiq.utils import maybe_awaitable

from jobs_service.client._errors import EnqueueError, EnqueueUnconfirmedError
from jobs_service.client._metrics import count_unconfirmed
from jobs_service.infrastructure.models import JobRun
from jobs_service.infrastructure.redis_sends import SendUnconfirmedError
from jobs_service.infrastructure.wire import broker_message_of
from jobs_service.tasks.registry import InvalidKwargsError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from taskiq import AsyncBroker
    from taskiq.message import BrokerMessage

    from jobs_service.client._requests import RunRequest
    from jobs_service.infrastructure.database import Database

__all__ = ["forget_unsent", "send_to_broker", "serialise_runs"]


@dataclass(frozen=True, slots=True)
class _Wire:
    """A message as the middlewares left it, and its encoded form."""

    message: TaskiqMessage
    encoded: BrokerMessage


async def serialise_runs(broker: AsyncBroker, requests: Sequence[RunRequest]) -> list[_Wire]:
    """The messages of ``requests`` as ``broker`` sends them (see
    :meth:`JobsClient.serialise`)."""
    pre_send = [m for m in broker.middlewares if type(m).pre_send is not TaskiqMiddleware.pre_send]
    wire: list[_Wire] = []
    for request in requests:
        try:
            message, encoded = request.wire()
            for middleware in pre_send:
                message = await maybe_awaitable(middleware.pre_send(message))
            if pre_send:  # a middleware may have changed it: encode it as TaskIQ would
                broker_message = broker.formatter.dumps(message)
            else:
                broker_message = broker_message_of(message, encoded)
        except (TypeError, ValueError) as exc:
            msg = f"run of {request.info.name} cannot be encoded: {exc}"
            raise InvalidKwargsError(
                request.info.name, [{"loc": [], "msg": msg, "type": "unencodable"}]
            ) from exc
        wire.append(_Wire(message, broker_message))
    return wire


async def send_to_broker(
    broker: AsyncBroker, requests: Sequence[RunRequest], wire: Sequence[_Wire]
) -> None:
    """Send serialised runs (see :meth:`JobsClient.send`)."""
    try:
        kick_many = getattr(broker, "kick_many", None)
        if kick_many is not None:
            once = any(request.send_once for request in requests)
            await kick_many([item.encoded for item in wire], once=once)
        else:
            for item in wire:
                await broker.kick(item.encoded)
    except SendUnconfirmedError as exc:
        count_unconfirmed(request.info.name for request in requests)
        which = f"run {requests[0].run_id}" if len(requests) == 1 else f"{len(requests)} runs"
        msg = (
            f"the broker did not confirm {which} ({exc}): it may have been queued, or "
            "not; it is in the history once a worker starts it. Submitting it again "
            "(without an Idempotency-Key) makes another run"
        )
        raise EnqueueUnconfirmedError(msg, run_ids=[r.run_id for r in requests]) from exc
    except Exception as exc:
        msg = f"the broker did not accept the run ({type(exc).__name__}: {exc})"
        raise EnqueueError(msg) from exc
    middlewares = broker.middlewares
    for item in wire:
        for middleware in reversed(middlewares):
            if type(middleware).post_send is not TaskiqMiddleware.post_send:
                await maybe_awaitable(middleware.post_send(item.message))


async def forget_unsent(database: Database, requests: Sequence[RunRequest]) -> None:
    """Delete the still-``queued`` rows of runs the broker refused."""
    async with database.engine.begin() as connection:
        await connection.execute(
            delete(JobRun).where(
                JobRun.run_id.in_([r.run_id for r in requests]), JobRun.status == "queued"
            )
        )
