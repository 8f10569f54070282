"""The Python producer API: ``enqueue``, ``enqueue_many``, ``get_run``, ``retry``,
``cancel``.

The gateway, the CLI and applications all enqueue through :class:`JobsClient`. A run id
is returned to a caller once the run's ``queued`` row is written and its message sent,
so it is visible in the history. A run with an ``Idempotency-Key`` is sent inside the
transaction that inserts its row, so the key is claimed atomically and becomes visible
only once the run is really queued (see ``KeyClaims.submit``). (A run without one is
sent first and recorded right after on PostgreSQL: see
``KeylessSubmits._submit_keyless``.) If the broker refuses the send, the row is removed
(or never written) and :class:`EnqueueError` raised: the caller is told nothing was
queued, so nothing half-queued is left behind.

A send can also fail without a refusal: its command reached Redis and no answer came (a
timeout, a connection lost midway), and a Redis that stalled runs it when it resumes.
That is :class:`EnqueueUnconfirmedError`, which names the runs that may be queued. A
keyed run then keeps its claim, marked unconfirmed, so a repeat with the key gets the
same run, never a second one: the repeat sends it again, and so does the
``resend_unconfirmed_runs`` job if nobody repeats; such sends add a run's message once
at most, however many of them reach Redis (``StreamBroker.kick_many(once=True)``).
"""

# The modules behind this package each hold one part of the client: _requests (a run
# validated), _sends (to the broker), _claims (keyed runs), _replays (a key's
# repeats), _keyless (runs without a key, and batches), _resends, _operator (retry,
# cancel), and _client (JobsClient, which composes them). Only the names below are
# the contract.

from __future__ import annotations

from jobs_service.client._client import JobsClient
from jobs_service.client._errors import (
    EnqueueError,
    EnqueueUnconfirmedError,
    IdempotencyConflictError,
    InvalidIdempotencyKeyError,
    RunNotFoundError,
    RunStateError,
)
from jobs_service.client._keyless import FIRST_CHUNK as FIRST_CHUNK
from jobs_service.client._keyless import SEND_CHUNK as SEND_CHUNK
from jobs_service.client._operator import CANCELLABLE_STATUSES as CANCELLABLE_STATUSES
from jobs_service.client._operator import RETRYABLE_STATUSES as RETRYABLE_STATUSES
from jobs_service.client._requests import RunOptions, RunRequest, Submission
from jobs_service.client._resends import Resent

__all__ = [
    "EnqueueError",
    "EnqueueUnconfirmedError",
    "IdempotencyConflictError",
    "InvalidIdempotencyKeyError",
    "JobsClient",
    "Resent",
    "RunNotFoundError",
    "RunOptions",
    "RunRequest",
    "RunStateError",
    "Submission",
]
