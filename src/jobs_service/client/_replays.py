"""A repeat of an Idempotency-Key: the run already queued with it, if the repeat asks
for the same run, and that run's send confirmed if its first one was not."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from jobs_service.client._errors import (
    EnqueueError,
    EnqueueUnconfirmedError,
    IdempotencyConflictError,
)
from jobs_service.client._requests import Submission
from jobs_service.core.json_values import json_equal
from jobs_service.infrastructure.repositories import runs

if TYPE_CHECKING:
    from jobs_service.client._client import JobsClient
    from jobs_service.client._requests import RunRequest
    from jobs_service.infrastructure.database import Database
    from jobs_service.infrastructure.models import JobRun
    from jobs_service.tasks.registry import TaskInfo

__all__ = ["Replays"]


class Replays:
    """Answers repeats of ``client``'s keyed submits from ``database``."""

    def __init__(self, client: JobsClient, database: Database) -> None:
        self._client = client
        self._database = database

    async def existing_for(self, request: RunRequest) -> Submission | None:
        key = request.idempotency_key
        if key is None:
            return None
        async with self._database.sessions() as session:
            run = await runs.get_run_by_idempotency_key(session, key)
        if run is None:
            return None
        difference = _difference(request, run)
        if difference is not None:
            msg = f"Idempotency-Key {key!r} was already used with a different {difference}"
            raise IdempotencyConflictError(msg)
        if run.status == "queued" and run.send_unconfirmed_at is not None:
            await self._confirm(run, key)
        return Submission(run.run_id, run.status, replayed=True)

    async def _confirm(self, run: JobRun, key: str) -> None:
        """Send again a keyed run whose first send was not confirmed (its message is
        added only if it is not in the stream already), within ``claim_timeout_s``;
        :class:`EnqueueUnconfirmedError` if that fails too."""
        try:
            async with asyncio.timeout(self._client.claim_timeout_s):
                await self._client.resend([run.run_id])
        except (EnqueueError, TimeoutError) as exc:
            reason = (
                f"no answer within {self._client.claim_timeout_s:g} s"
                if isinstance(exc, TimeoutError)
                else str(exc.__cause__ or exc)
            )
            msg = (
                f"run {run.run_id} of Idempotency-Key {key!r} is recorded as queued, but the "
                f"broker never confirmed its send, and sending it again failed ({reason}); "
                "repeat the request later: it answers with this run"
            )
            raise EnqueueUnconfirmedError(
                msg, run_ids=[run.run_id], recorded=True, idempotency_key=key
            ) from exc


def _difference(request: RunRequest, run: JobRun) -> str | None:
    """What a repeat with the key of ``run`` asks for differently (None: nothing).

    A repeat is the same request when it names the same task with the same arguments,
    delivers its result to the same targets and comes from the same schedule fire or
    webhook event: anything else replayed would be told "queued" about a run that does
    not do what it asked.
    """
    if run.task != request.info.name:
        return "task"
    if not _same_arguments(request.info, run.kwargs, request.kwargs):
        return "kwargs"
    if not json_equal(run.deliver_to, request.deliver_to):
        return "deliver_to"
    if (run.schedule_id, run.scheduled_for) != (request.schedule_id, request.scheduled_for):
        return "schedule fire"
    if run.webhook_event_id != request.webhook_event_id:
        return "webhook event"
    return None


def _same_arguments(info: TaskInfo, stored: Any, submitted: dict[str, Any]) -> bool:
    """Whether a repeat's kwargs are the first request's: equal as JSON, or once the
    defaults are filled in and the stored ones read back through the signature (an
    explicit ``"fail_on": null`` is the default left out)."""
    if json_equal(stored, submitted):
        return True
    model = info.kwargs_model
    try:
        return json_equal(
            model.model_validate(stored).model_dump(mode="json"),
            model.model_validate(submitted).model_dump(mode="json"),
        )
    except (ValidationError, ValueError):
        return False
