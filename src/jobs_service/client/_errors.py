"""What a producer is told when a run is not queued as asked: the broker refused or did
not confirm it, its key was used for another request, or the run it names is missing or
in a state that does not allow the action."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs_service.core.errors import JobsError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "EnqueueError",
    "EnqueueUnconfirmedError",
    "IdempotencyConflictError",
    "InvalidIdempotencyKeyError",
    "RunNotFoundError",
    "RunStateError",
]


class EnqueueError(JobsError):
    """The broker (or the database) did not accept the runs. ``queued`` lists the run
    ids of a batch that were queued before it failed (sent in earlier chunks; they run
    as usual); nothing else was queued."""

    def __init__(self, message: str, *, queued: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.queued = list(queued)


class EnqueueUnconfirmedError(EnqueueError):
    """The broker did not confirm a send that reached it (its answer timed out, or the
    connection was lost after the message was written): the runs ``run_ids`` may be
    queued, or not. ``queued`` lists the runs of a batch queued before them; the runs
    after them were not sent.

    ``recorded``: the runs are recorded ``queued`` and marked unconfirmed, and are sent
    again, once at most, by the ``resend_unconfirmed_runs`` job (and by a repeat of a
    keyed submit, whose ``idempotency_key`` this is): they will run, once.
    """

    def __init__(
        self,
        message: str,
        *,
        run_ids: Sequence[str],
        queued: Sequence[str] = (),
        recorded: bool = False,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(message, queued=queued)
        self.run_ids = list(run_ids)
        self.recorded = recorded
        self.idempotency_key = idempotency_key


class InvalidIdempotencyKeyError(JobsError, ValueError):
    """The ``Idempotency-Key`` is empty, longer than 255 characters, or not printable
    ASCII without spaces (the rules of the HTTP header, for every producer)."""


class IdempotencyConflictError(JobsError):
    """The ``Idempotency-Key`` was used before for a different request: another task,
    other arguments or ``deliver_to``, or another schedule fire or webhook event."""


class RunNotFoundError(JobsError):
    """No run has this run id."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run {run_id!r}")
        self.run_id = run_id


class RunStateError(JobsError):
    """The run's status does not allow the action (retry a running run, cancel a
    finished one)."""

    def __init__(self, run_id: str, status: str, action: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"run {run_id} is {status}: only {', '.join(allowed)} runs can be {action}"
        )
        self.run_id = run_id
        self.status = status
        self.action = action
