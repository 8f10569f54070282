"""The Python producer API: ``enqueue``, ``enqueue_many``, ``get_run``, ``retry``,
``cancel``.

The gateway, the CLI and applications all enqueue through :class:`JobsClient`. A run id
is returned to a caller once the run's ``queued`` row is written and its message sent,
so it is visible in the history. A run with an ``Idempotency-Key`` is sent inside the
transaction that inserts its row, so the key is claimed atomically and becomes visible
only once the run is really queued (see ``JobsClient._submit_claimed``). (A run without
one is sent first and recorded right after on PostgreSQL: see
``JobsClient._submit_keyless``.) If the broker refuses the send, the row is removed (or
never written) and :class:`EnqueueError` raised: the caller is told nothing was queued,
so nothing half-queued is left behind.

A send can also fail without a refusal: its command reached Redis and no answer came (a
timeout, a connection lost midway), and a Redis that stalled runs it when it resumes.
That is :class:`EnqueueUnconfirmedError`, which names the runs that may be queued. A
keyed run then keeps its claim, marked unconfirmed, so a repeat with the key gets the
same run, never a second one: the repeat sends it again, and so does the
``resend_unconfirmed_runs`` job if nobody repeats; such sends add a run's message once
at most, however many of them reach Redis (``StreamBroker.kick_many(once=True)``).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import orjson
from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from taskiq import TaskiqMessage, TaskiqMiddleware
from taskiq.utils import maybe_awaitable

from jobs_service.core.delivery import DeliverTo
from jobs_service.core.errors import JobsError
from jobs_service.core.ids import new_run_id
from jobs_service.core.json_values import json_equal
from jobs_service.core.logging import get_logger
from jobs_service.core.ports import Resends
from jobs_service.infrastructure.cancellations import Cancellation
from jobs_service.infrastructure.models import RUN_SOURCES, TERMINAL_STATUSES, JobRun
from jobs_service.infrastructure.redis_sends import SendUnconfirmedError
from jobs_service.infrastructure.repositories import runs, unconfirmed_sends
from jobs_service.infrastructure.wire import (
    STORE_RESULT_LABEL,
    broker_message_of,
    encode_message,
    prepare_labels,
)
from jobs_service.middlewares.cancellation import announce_cancellation
from jobs_service.tasks.registry import InvalidKwargsError, TaskInfo, find_task

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction
    from taskiq import AsyncBroker
    from taskiq.message import BrokerMessage

    from jobs_service.infrastructure.queued_runs import QueuedRunWriter
    from jobs_service.infrastructure.runtime import Runtime

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

_log = get_logger("jobs_service.client")

#: Runs of a batch recorded and sent together (see ``JobsClient.enqueue_many``).
SEND_CHUNK = 250
#: Runs in a batch's first chunk: few, so a worker starts on them sooner.
FIRST_CHUNK = 100
#: Runs an operator may retry, and runs an operator may cancel.
RETRYABLE_STATUSES = ("failed", "dead", "cancelled")
CANCELLABLE_STATUSES = ("queued", "running", "retrying")
#: PostgreSQL's ``lock_not_available``: a ``lock_timeout`` ran out.
_LOCK_NOT_AVAILABLE = "55P03"
#: A repeat waits for the key this much longer than the holder's send may take.
_CLAIM_WAIT_MARGIN_S = 2.0


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


class RunOptions(TypedDict, total=False):
    """Where a run comes from and how it is deduplicated; every key is optional.

    ``check_channels`` (default True) refuses a ``deliver_to`` whose Teams channel this
    deployment does not configure, as invalid arguments. False lets the run go ahead and
    leaves that delivery to fail, with a configuration error on the run's deliveries:
    for a schedule's fire, whose alias was checked when the schedule was saved and may
    have been renamed or removed since, so that only its delivery stops, not its work.
    """

    source: str
    idempotency_key: str | None
    schedule_id: int | None
    scheduled_for: datetime | None
    webhook_event_id: int | None
    deliver_to: Mapping[str, Any] | None
    check_channels: bool


@dataclass(frozen=True, slots=True)
class Resent:
    """What :meth:`JobsClient.resend` did: the runs sent, those a worker had started, and
    those that cannot be sent, with why (their row is gone, or their task)."""

    sent: list[str]
    started: list[str]
    unsendable: dict[str, JobsError] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Submission:
    """The answer to a submit: the run, and whether it already existed."""

    run_id: str
    status: str
    replayed: bool


@dataclass(frozen=True, slots=True)
class _Wire:
    """A message as the middlewares left it, and its encoded form."""

    message: TaskiqMessage
    encoded: BrokerMessage


@dataclass(slots=True)
class RunRequest:
    """A validated run, ready to be recorded (``queued_row``) and sent (``message``)."""

    info: TaskInfo
    kwargs: dict[str, Any]
    source: str
    run_id: str = field(default_factory=new_run_id)
    queued_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    idempotency_key: str | None = None
    schedule_id: int | None = None
    scheduled_for: datetime | None = None
    webhook_event_id: int | None = None
    deliver_to: dict[str, Any] | None = None
    #: Set for a run sent again as a later attempt (an operator's retry).
    attempt: int | None = None
    #: A run that may be sent more than once (an outbox, an Idempotency-Key, a retry):
    #: its sends add its message once at most (``StreamBroker.kick_many(once=True)``).
    send_once: bool = False

    def queued_row(self) -> runs.QueuedRun:
        """The ``queued`` row of this run."""
        return runs.QueuedRun(
            run_id=self.run_id,
            task=self.info.name,
            kwargs=self.kwargs,
            source=self.source,
            queued_at=self.queued_at,
            idempotency_key=self.idempotency_key,
            schedule_id=self.schedule_id,
            scheduled_for=self.scheduled_for,
            webhook_event_id=self.webhook_event_id,
            deliver_to=self.deliver_to,
        )

    def message(self) -> TaskiqMessage:
        """The TaskIQ message; run metadata travels in labels."""
        return self.wire()[0]

    def wire(self) -> tuple[TaskiqMessage, bytes]:
        """The TaskIQ message and its encoded form (orjson, TaskIQ's JSON layout)."""
        raw: dict[str, Any] = {"source": self.source, "queued_at": self.queued_at.timestamp()}
        if self.schedule_id is not None:
            raw["schedule_id"] = self.schedule_id
        if self.scheduled_for is not None:
            raw["scheduled_for"] = self.scheduled_for.timestamp()
        if self.webhook_event_id is not None:
            raw["webhook_event_id"] = self.webhook_event_id
        if self.deliver_to is not None:
            raw["deliver_to"] = orjson.dumps(self.deliver_to).decode()
        if self.attempt is not None:
            raw["attempt"] = self.attempt
        if STORE_RESULT_LABEL not in self.info.wire_labels:
            # The outcome is in the run history; a copy in Redis would only use memory
            # (a task labelled store_result=True still gets TaskIQ's result).
            raw[STORE_RESULT_LABEL] = False
        static_labels, static_types = self.info.prepared_wire_labels
        labels, types = prepare_labels(raw)
        return encode_message(
            self.run_id,
            self.info.name,
            static_labels | labels,
            static_types | types,
            self.kwargs,
        )


class JobsClient:
    """Enqueues runs on ``broker`` and records them through ``runtime``'s database."""

    #: How long a run with an Idempotency-Key may wait for its turn, for the broker, and
    #: for another request holding its key (see :meth:`_submit_claimed`).
    claim_timeout_s = 5.0

    def __init__(self, broker: AsyncBroker, runtime: Runtime) -> None:
        self._broker = broker
        self._database = runtime.database
        self._queued_runs = runtime.queued_run_writer()
        # Runs with an Idempotency-Key each hold a pooled connection while they are sent
        # (see _submit_claimed): never more than half the pool at once.
        self._claiming = asyncio.Semaphore(max(1, runtime.settings.database.pool_size // 2))
        self._teams_channels = frozenset(runtime.settings.channels.teams)
        self._redis_prefix = runtime.settings.redis_prefix

    @property
    def broker(self) -> AsyncBroker:
        """The broker this client sends to."""
        return self._broker

    def task(self, name: str) -> TaskInfo:
        """The registered task ``name`` (raises ``UnknownTaskError``)."""
        return find_task(self._broker, name)

    async def enqueue(
        self, task: str, kwargs: Mapping[str, Any] | None = None, **options: Unpack[RunOptions]
    ) -> str:
        """Validate ``kwargs`` against the task, queue one run and return its run id."""
        return (await self.submit(task, kwargs, **options)).run_id

    async def submit(
        self, task: str, kwargs: Mapping[str, Any] | None = None, **options: Unpack[RunOptions]
    ) -> Submission:
        """Like :meth:`enqueue`, but tells whether an idempotent replay happened."""
        request = self.prepare(task, kwargs, **options)
        idempotency_key = request.idempotency_key
        if idempotency_key is not None:
            existing = await self._existing_for(request)
            if existing is not None:
                return existing
        wire = await self.serialise([request])  # a message that cannot be sent is never queued
        if idempotency_key is not None:
            return await self._submit_claimed(request, wire)
        if self._queued_runs is not None:
            return await self._submit_keyless(self._queued_runs, request, wire)
        if not await self._record_queued(request):
            msg = f"run {request.run_id} could not be recorded: its row already exists"
            raise EnqueueError(msg)
        await self.send_or_forget([request], wire)
        return Submission(request.run_id, "queued", replayed=False)

    async def _submit_claimed(self, request: RunRequest, wire: Sequence[_Wire]) -> Submission:
        """Claim the run's idempotency key and send the run, in one transaction.

        The row is inserted, the message sent, then the row committed. Until the commit
        no one else sees the key: a concurrent request with the same key waits on the
        unique index, then replays a run that is really queued, or, if this send
        failed and rolled the row back, claims the key itself. Committed first and
        sent after, a repeat arriving during the send was told "queued" about a run
        whose send then failed and whose row was deleted; and a process killed between
        the two left a row that every repeat replayed and nothing ever sent.

        The price is a database connection held while the broker takes the message, so
        it is bounded: at most half the pool's connections claim at once (beyond
        that a submit waits its turn, for ``claim_timeout_s`` at most), the send gets
        ``claim_timeout_s``, and on PostgreSQL a repeat waits that long (and a little
        more) for the key. Each bound ends in :class:`EnqueueError` (503, retry
        later).

        A send whose outcome is unknown (it timed out, or lost its connection after the
        message was written: the message may be in the stream, or land there when a
        stalled Redis resumes) must neither free the key, or a repeat queues a second
        run, nor be taken for a refusal. So the claim is committed all the same, marked
        unconfirmed (:meth:`_keep_unconfirmed`), and :class:`EnqueueUnconfirmedError`
        raised; a repeat then replays this run and sends it again, and so does the
        ``resend_unconfirmed_runs`` job if nobody repeats. A keyed run's sends add its
        message once at most (``send_once``), so however many of them reach Redis, in
        whatever order, it is queued once.
        """
        try:
            async with asyncio.timeout(self.claim_timeout_s):
                await self._claiming.acquire()
        except TimeoutError:
            msg = "too many runs with an Idempotency-Key are waiting for the broker; retry later"
            raise EnqueueError(msg) from None
        try:
            return await self._claim_and_send(request, wire)
        finally:
            self._claiming.release()

    async def _claim_and_send(self, request: RunRequest, wire: Sequence[_Wire]) -> Submission:
        async with self._database.engine.connect() as connection:
            transaction = await connection.begin()  # rolled back on close unless committed
            if await self._claim(connection, request):
                try:
                    async with asyncio.timeout(self.claim_timeout_s):
                        await self.send([request], wire)
                except (EnqueueUnconfirmedError, TimeoutError) as exc:
                    raise await self._keep_unconfirmed(
                        connection, transaction, request, exc
                    ) from exc
                await self._commit_claim(transaction, request)
                return Submission(request.run_id, "queued", replayed=False)
        # The key was taken by a run that was queued (committed) meanwhile.
        existing = await self._existing_for(request)
        if existing is None:
            msg = f"run {request.run_id} could not be recorded: its key was taken and freed"
            raise EnqueueError(msg)
        return existing

    async def _keep_unconfirmed(
        self,
        connection: AsyncConnection,
        transaction: AsyncTransaction,
        request: RunRequest,
        cause: Exception,
    ) -> EnqueueUnconfirmedError:
        """Commit a claim whose send is unconfirmed, marked so; the error to raise."""
        reason = (
            f"no answer within {self.claim_timeout_s:g} s"
            if isinstance(cause, TimeoutError)
            else str(cause.__cause__ or cause)
        )
        key = request.idempotency_key
        try:
            marked_at = datetime.now(UTC)
            await unconfirmed_sends.mark_unconfirmed(connection, [request.run_id], at=marked_at)
            await transaction.commit()
        except Exception as exc:  # noqa: BLE001 - the run may be queued; only its key is lost
            _log.error(
                "idempotency-key-unrecorded",
                run_id=request.run_id,
                task=request.info.name,
                error=f"{type(exc).__name__}: {exc}",
            )
            msg = (
                f"the broker did not confirm run {request.run_id} ({reason}), and its "
                f"Idempotency-Key could not be recorded: it may have been queued, or not"
            )
            return EnqueueUnconfirmedError(msg, run_ids=[request.run_id], idempotency_key=key)
        _log.warning(
            "send-unconfirmed",
            run_id=request.run_id,
            task=request.info.name,
            error=reason,
            message="claim kept: a repeat of the key, or resend_unconfirmed_runs, sends it",
        )
        msg = (
            f"the broker did not confirm run {request.run_id} ({reason}): it is recorded "
            "as queued and will be queued once, by a repeat of this request with the same "
            "Idempotency-Key (which answers with this run) or by the service itself "
            "within a few minutes of the broker answering again"
        )
        return EnqueueUnconfirmedError(
            msg, run_ids=[request.run_id], recorded=True, idempotency_key=key
        )

    async def _claim(self, connection: AsyncConnection, request: RunRequest) -> bool:
        """Insert the claim; False if the key is taken. On PostgreSQL the wait for a key
        another request holds is bounded (``lock_timeout``)."""
        if connection.dialect.name == "postgresql":
            wait_ms = int((self.claim_timeout_s + _CLAIM_WAIT_MARGIN_S) * 1000)
            await connection.exec_driver_sql(f"SET LOCAL lock_timeout = {wait_ms}")
        try:
            return await runs.claim_idempotency_key(connection, request.queued_row())
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            msg = (
                f"another request with Idempotency-Key {request.idempotency_key!r} is still "
                "queueing its run; retry shortly"
            )
            raise EnqueueError(msg) from None

    async def _submit_keyless(
        self, writer: QueuedRunWriter, request: RunRequest, wire: Sequence[_Wire]
    ) -> Submission:
        """Send a run without an idempotency key, then record its ``queued`` row.

        Nothing is claimed by such a row, and it commits asynchronously anyway (see
        :mod:`~jobs_service.infrastructure.queued_runs`), so the send need not wait for
        it. Nor should the two go out together: the database's work for the row then
        competes for the CPU with Redis and the worker delivering that same run, where
        after the send's reply it mostly overlaps the run's start instead (on two
        shared cores, W2's p50 dropped from about 1.1 to 0.7 ms). The caller still gets
        the run id only once both are done. If the send fails, nothing was written and
        the error is raised: :class:`EnqueueUnconfirmedError` when the message may be
        queued all the same (no row is written for it then: if it is queued, the worker
        that runs it writes the row). If only the row fails (the database is down or
        does not answer within 5 s, or the worker wrote the run first), the run is
        queued all the same and the worker that runs it writes its full row (run
        recording never loses a state).
        """
        await self.send([request], wire)
        await self._record_sent(writer, [request])
        return Submission(request.run_id, "queued", replayed=False)

    @staticmethod
    async def _record_sent(writer: QueuedRunWriter, requests: Sequence[RunRequest]) -> None:
        """Write the ``queued`` rows of runs already sent. A failure is logged, not
        raised: the runs are queued, and the worker that runs each writes its row. That
        includes a database that does not write them within the writer's timeout (5 s,
        as ``claim_timeout_s``): the caller is answered without them."""
        try:
            await writer.record_many([request.queued_row() for request in requests])
        except Exception as exc:  # noqa: BLE001 - the runs are queued; their rows come later
            _log.warning(
                "queued-row-deferred",
                run_id=requests[0].run_id,
                runs=len(requests),
                task=requests[0].info.name,
                error=f"{type(exc).__name__}: {exc}",
            )

    @staticmethod
    async def _commit_claim(transaction: AsyncTransaction, request: RunRequest) -> None:
        """Commit a claim whose run is already sent. Should the commit fail, the run is
        still queued (its worker records it, without the key): that is logged, not
        raised, as an error would invite a resend and run it twice."""
        try:
            await transaction.commit()
        except Exception as exc:  # noqa: BLE001 - the run is queued; only its key is lost
            _log.error(
                "idempotency-key-unrecorded",
                run_id=request.run_id,
                task=request.info.name,
                error=f"{type(exc).__name__}: {exc}",
            )

    async def _record_queued(self, request: RunRequest) -> bool:
        """Insert a keyless run's ``queued`` row (SQLite); False if its id is taken."""
        try:
            async with self._database.engine.begin() as connection:
                await runs.insert_queued_runs(connection, [request.queued_row()])
        except IntegrityError:
            return False
        return True

    async def _record_many(self, requests: Sequence[RunRequest]) -> None:
        """Insert the ``queued`` rows of keyless runs in one transaction (SQLite: on
        PostgreSQL they follow their send, see :meth:`_record_sent`)."""
        async with self._database.engine.begin() as connection:
            await runs.insert_queued_runs(connection, [r.queued_row() for r in requests])

    async def enqueue_many(
        self,
        task: str,
        kwargs_list: Sequence[Mapping[str, Any]],
        *,
        source: str = "api",
    ) -> list[str]:
        """Queue one run per kwargs mapping; returns their run ids in order.

        Every item is validated before anything is queued, so a bad item rejects the
        whole batch. The runs then go out in chunks, one broker round trip each: a first
        one of ``FIRST_CHUNK`` runs, so a worker starts on them while the rest are still
        encoded, then chunks of ``SEND_CHUNK``. On PostgreSQL a chunk's ``queued`` rows
        are written after its messages are sent, while the next chunk is encoded, as for
        a single run (see :meth:`_submit_keyless`); the call returns once every row is
        written. On SQLite each chunk's rows come first. If the broker fails midway,
        :class:`EnqueueError` says which runs were queued; if it does not confirm a
        chunk, :class:`EnqueueUnconfirmedError` says which were queued and which may be.

        A long-running producer should freeze its heap once started
        (:func:`jobs_service.infrastructure.heap.settle_heap`): a thousand runs held
        alive otherwise set off a full collection of everything imported, a pause of
        about 100 ms.
        """
        info = self.task(task)
        options: RunOptions = {"source": source}
        requests = []
        for index, kwargs in enumerate(kwargs_list):
            try:
                requests.append(self._prepare(info, kwargs, options))
            except InvalidKwargsError as exc:
                errors = [
                    {**error, "loc": ["items", index, "kwargs", *error["loc"]]}
                    for error in exc.errors
                ]
                raise InvalidKwargsError(exc.task, errors) from None
        queued: list[str] = []
        recording: list[asyncio.Task[None]] = []
        try:
            for part in _chunks(requests):
                try:
                    await self._queue_chunk(part, recording)
                except EnqueueUnconfirmedError as exc:
                    unsent = len(requests) - len(queued) - len(part)
                    msg = (
                        f"{len(queued)} of {len(requests)} runs were queued; the broker did "
                        f"not confirm the next {len(part)} ({exc.__cause__}): they may have "
                        f"been queued, or not; the {unsent} after them were not sent"
                    )
                    raise EnqueueUnconfirmedError(
                        msg, run_ids=exc.run_ids, queued=queued
                    ) from exc.__cause__
                except Exception as exc:
                    if not queued:
                        raise
                    msg = f"{len(queued)} of {len(requests)} runs were queued, then: {exc}"
                    raise EnqueueError(msg, queued=queued) from exc
                queued.extend(request.run_id for request in part)
        finally:
            await asyncio.gather(*recording)
        return queued

    async def _queue_chunk(
        self, requests: Sequence[RunRequest], recording: list[asyncio.Task[None]]
    ) -> None:
        """Send one chunk of a batch; its rows are written now (SQLite) or by a task
        added to ``recording`` (PostgreSQL)."""
        wire = await self.serialise(requests)
        if self._queued_runs is None:
            await self._record_many(requests)
            await self.send_or_forget(requests, wire)
            return
        await self.send(requests, wire)
        rows = self._record_sent(self._queued_runs, requests)
        recording.append(asyncio.create_task(rows, name="record-queued-rows"))

    def prepare(
        self,
        task: str,
        kwargs: Mapping[str, Any] | None = None,
        *,
        send_once: bool = False,
        **options: Unpack[RunOptions],
    ) -> RunRequest:
        """Validate a run without recording or sending it (for callers that record it
        in their own transaction, such as the scheduler's fire claims). ``send_once``:
        the caller may send it again (an outbox): each send adds it once at most."""
        request = self._prepare(self.task(task), kwargs, options)
        request.send_once = request.send_once or send_once
        return request

    def _prepare(
        self, info: TaskInfo, kwargs: Mapping[str, Any] | None, options: RunOptions
    ) -> RunRequest:
        arguments = dict(kwargs or {})
        deliver_to = options.get("deliver_to")
        if deliver_to is not None and info.takes("deliver_to"):
            # A task that delivers its own result gets the targets as its argument.
            arguments.setdefault("deliver_to", dict(deliver_to))
            deliver_to = None
        validated = info.validate_kwargs(arguments)
        if info.takes("deliver_to"):
            deliver_to = validated.get("deliver_to")
        key = _check_idempotency_key(options.get("idempotency_key"))
        return RunRequest(
            info=info,
            kwargs=validated,
            source=_check_source(options.get("source", "api")),
            idempotency_key=key,
            send_once=key is not None,
            schedule_id=options.get("schedule_id"),
            scheduled_for=options.get("scheduled_for"),
            webhook_event_id=options.get("webhook_event_id"),
            deliver_to=self._delivery_targets(
                info, deliver_to, check_channels=options.get("check_channels", True)
            ),
        )

    def _delivery_targets(
        self, info: TaskInfo, value: Mapping[str, Any] | None, *, check_channels: bool
    ) -> dict[str, Any] | None:
        """``deliver_to`` validated, its Teams channel known to this deployment (unless
        ``check_channels`` is False: see :class:`RunOptions`)."""
        if value is None:
            return None
        try:
            targets = DeliverTo.model_validate(value)
        except ValidationError as exc:
            errors = [
                {"loc": ["deliver_to", *error["loc"]], "msg": error["msg"], "type": error["type"]}
                for error in exc.errors(include_url=False)
            ]
            raise InvalidKwargsError(info.name, errors) from None
        alias = targets.teams_channel
        if check_channels and alias is not None and alias not in self._teams_channels:
            known = ", ".join(sorted(self._teams_channels)) or "none configured"
            error = {
                "loc": ["deliver_to", "teams_channel"],
                "msg": f"unknown Teams channel {alias!r} (configured: {known})",
                "type": "unknown_channel",
            }
            raise InvalidKwargsError(info.name, [error])
        return targets.as_json()

    async def serialise(self, requests: Sequence[RunRequest]) -> list[_Wire]:
        """Run the producer middlewares and encode each message for the broker."""
        pre_send = [
            m for m in self._broker.middlewares if type(m).pre_send is not TaskiqMiddleware.pre_send
        ]
        wire: list[_Wire] = []
        for request in requests:
            try:
                message, encoded = request.wire()
                for middleware in pre_send:
                    message = await maybe_awaitable(middleware.pre_send(message))
                if pre_send:  # a middleware may have changed it: encode it as TaskIQ would
                    broker_message = self._broker.formatter.dumps(message)
                else:
                    broker_message = broker_message_of(message, encoded)
            except (TypeError, ValueError) as exc:
                msg = f"run of {request.info.name} cannot be encoded: {exc}"
                raise InvalidKwargsError(
                    request.info.name, [{"loc": [], "msg": msg, "type": "unencodable"}]
                ) from exc
            wire.append(_Wire(message, broker_message))
        return wire

    async def send(
        self, requests: Sequence[RunRequest], wire: Sequence[_Wire] | None = None
    ) -> None:
        """Send recorded runs to the broker (one pipelined round trip on Redis); runs
        marked ``send_once`` are added once at most, however often they are sent.

        Raises :class:`EnqueueError` when the broker refuses (nothing was queued), and
        :class:`EnqueueUnconfirmedError` when it took the send and did not answer (the
        runs may be queued); the rows stay as they are.
        """
        wire = wire if wire is not None else await self.serialise(requests)
        try:
            kick_many = getattr(self._broker, "kick_many", None)
            if kick_many is not None:
                once = any(request.send_once for request in requests)
                await kick_many([item.encoded for item in wire], once=once)
            else:
                for item in wire:
                    await self._broker.kick(item.encoded)
        except SendUnconfirmedError as exc:
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
        middlewares = self._broker.middlewares
        for item in wire:
            for middleware in reversed(middlewares):
                if type(middleware).post_send is not TaskiqMiddleware.post_send:
                    await maybe_awaitable(middleware.post_send(item.message))

    async def send_or_forget(
        self, requests: Sequence[RunRequest], wire: Sequence[_Wire] | None = None
    ) -> None:
        """Send; if the broker refuses, or does not confirm, delete the still-queued rows
        and re-raise (a run whose message did land writes its row when it runs)."""
        try:
            await self.send(requests, wire)
        except EnqueueError:
            await self._forget(requests)
            raise

    async def _forget(self, requests: Sequence[RunRequest]) -> None:
        """Delete the still-``queued`` rows of runs the broker refused."""
        async with self._database.engine.begin() as connection:
            await connection.execute(
                delete(JobRun).where(
                    JobRun.run_id.in_([r.run_id for r in requests]), JobRun.status == "queued"
                )
            )

    async def resend(self, run_ids: Sequence[str]) -> Resent:
        """Send again the runs that are still ``queued`` (same run ids).

        For outboxes: a run recorded in a transaction whose message may not have reached
        the broker (the sender died, or the broker refused or timed out). Each is added
        once at most per queueing (``send_once``): a run whose earlier send did reach
        the broker, if that send was marked ``send_once`` too, is not added twice. Runs
        a worker already started are reported, not sent; runs that can never be sent
        (their row was deleted, their task is no longer registered) are reported with
        the error. Runs marked unconfirmed are unmarked once sent or started. Raises
        :class:`EnqueueError` if the broker refuses (or
        :class:`EnqueueUnconfirmedError`: it did not answer).
        """
        async with self._database.sessions() as session:
            rows = (
                (await session.execute(select(JobRun).where(JobRun.run_id.in_(run_ids))))
                .scalars()
                .all()
            )
        pending: list[RunRequest] = []
        started: list[str] = []
        found = {run.run_id for run in rows}
        unsendable: dict[str, JobsError] = {
            run_id: RunNotFoundError(run_id) for run_id in run_ids if run_id not in found
        }
        for run in rows:
            if run.status != "queued":
                started.append(run.run_id)
                continue
            try:
                info = self.task(run.task)
            except JobsError as exc:
                unsendable[run.run_id] = exc
                continue
            pending.append(
                RunRequest(
                    info=info,
                    kwargs=run.kwargs,
                    source=run.source,
                    run_id=run.run_id,
                    queued_at=run.queued_at,
                    schedule_id=run.schedule_id,
                    scheduled_for=run.scheduled_for,
                    webhook_event_id=run.webhook_event_id,
                    deliver_to=run.deliver_to,
                    # Queued again by an operator's retry: the attempt after the last.
                    attempt=run.attempt + 1 if run.attempt else None,
                    send_once=True,
                )
            )
        if pending:
            await self.send(pending)
        settled = {r.run_id for r in pending} | set(started)
        await self._unmark(
            [r.run_id for r in rows if r.send_unconfirmed_at and r.run_id in settled]
        )
        return Resent(sent=[r.run_id for r in pending], started=started, unsendable=unsendable)

    async def _unmark(self, run_ids: Sequence[str]) -> None:
        """Unmark runs whose send is now confirmed (or that a worker started). A failure
        is logged: the mark stays, and the next re-send of them adds nothing."""
        if not run_ids:
            return
        try:
            async with self._database.engine.begin() as connection:
                await unconfirmed_sends.clear_unconfirmed(connection, run_ids)
        except Exception as exc:  # noqa: BLE001 - they are queued; only the mark is stale
            _log.warning(
                "send-unconfirmed-mark-kept", run_ids=list(run_ids)[:20], error=str(exc)[:300]
            )

    async def resend_unconfirmed(self, before: datetime, *, limit: int = 500) -> Resends:
        """Send again (:meth:`resend`) up to ``limit`` runs marked unconfirmed before
        ``before``, oldest first: a keyed submit or an operator's retry whose send the
        broker never confirmed, and that nobody repeated. Each is added once at most,
        so a run whose first send did land is not queued twice."""
        async with self._database.engine.connect() as connection:
            run_ids = await unconfirmed_sends.unconfirmed_since(connection, before, limit=limit)
        if not run_ids:
            return Resends(checked=0, sent=0, started=0, unsendable=0)
        result = await self.resend(run_ids)
        if result.sent:
            _log.warning("runs-resent-unconfirmed", runs=len(result.sent), run_ids=result.sent[:20])
        if result.unsendable:
            _log.error(
                "runs-unconfirmed-unsendable",
                runs=len(result.unsendable),
                run_ids=sorted(result.unsendable)[:20],
                errors=sorted({str(exc) for exc in result.unsendable.values()})[:5],
            )
        return Resends(
            checked=len(run_ids),
            sent=len(result.sent),
            started=len(result.started),
            unsendable=len(result.unsendable),
        )

    async def retry(self, run_id: str) -> JobRun:
        """Queue a failed, dead or cancelled run again: same run id, attempt N+1, its
        own source; its status is ``queued`` until a worker starts it.

        Raises :class:`RunNotFoundError`, :class:`RunStateError`, ``UnknownTaskError``
        (its task is gone), ``InvalidKwargsError`` (its arguments no longer fit the
        task) or :class:`EnqueueError` (nothing changed then). A send the broker did not
        confirm leaves the run ``queued``, marked unconfirmed (its message may be in the
        stream): the ``resend_unconfirmed_runs`` job sends it again, once at most, and
        :class:`EnqueueUnconfirmedError` says so.
        """
        run = await self._run_in(run_id, RETRYABLE_STATUSES, "retried")
        info = self.task(run.task)
        request = RunRequest(
            info=info,
            kwargs=info.validate_kwargs(run.kwargs),
            source=run.source,
            run_id=run.run_id,
            schedule_id=run.schedule_id,
            scheduled_for=run.scheduled_for,
            webhook_event_id=run.webhook_event_id,
            deliver_to=run.deliver_to,
            # A cancellation covers attempts up to the stored one (see Cancellation).
            attempt=run.attempt + 1,
            send_once=True,
        )
        wire = await self.serialise([request])
        # Claim the run first, so two concurrent retries cannot both send it.
        async with self._database.engine.begin() as connection:
            claimed = await runs.requeue_finished(connection, run, queued_at=request.queued_at)
        if not claimed:  # another operator retried it first
            now = await self._existing(run_id)
            raise RunStateError(run_id, now.status, "retried", RETRYABLE_STATUSES)
        # The run as this retry queued it, read before it is sent: once sent, a worker
        # may start it, and even end it, before a read after the send comes back.
        queued = await self._existing(run_id)
        try:
            await self.send([request], wire)
        except EnqueueUnconfirmedError as exc:
            raise await self._keep_retry_unconfirmed(run_id, exc) from exc
        except EnqueueError:
            async with self._database.engine.begin() as connection:
                await runs.restore_finished(connection, run)
            raise
        return queued

    async def _keep_retry_unconfirmed(
        self, run_id: str, cause: EnqueueUnconfirmedError
    ) -> EnqueueUnconfirmedError:
        """Leave a retried run whose send is unconfirmed ``queued``, marked so (its
        message may be in the stream: restored to its old status, it would run while
        recorded as ended); the error to raise."""
        reason = cause.__cause__ or cause
        try:
            async with self._database.engine.begin() as connection:
                await unconfirmed_sends.mark_unconfirmed(connection, [run_id], at=datetime.now(UTC))
        except Exception as exc:  # noqa: BLE001 - it stays queued; only the mark is missing
            _log.error("retry-unconfirmed-unmarked", run_id=run_id, error=str(exc)[:300])
            msg = (
                f"the broker did not confirm the retry of run {run_id} ({reason}): it may "
                "have been queued, or not; the run is recorded as queued"
            )
            return EnqueueUnconfirmedError(msg, run_ids=[run_id])
        msg = (
            f"the broker did not confirm the retry of run {run_id} ({reason}): the run "
            "stays queued and will be queued once, by the service itself within a few "
            "minutes of the broker answering again"
        )
        return EnqueueUnconfirmedError(msg, run_ids=[run_id], recorded=True)

    async def cancel(self, run_id: str, *, by: str) -> JobRun:
        """Cancel a queued, retrying or running run on behalf of ``by``.

        The cancellation is announced to the workers before the run is marked
        ``cancelled``: if the database write fails the run still never runs, and a
        repeated cancel completes the record; the other order could let it run while
        recorded cancelled. A worker that hears the announcement may record the run
        cancelled first; that is this cancel's outcome, not a conflict. Raises
        :class:`RunNotFoundError`, :class:`RunStateError` or :class:`EnqueueError` (the
        broker is unreachable; nothing was cancelled).
        """
        run = await self._run_in(run_id, CANCELLABLE_STATUSES, "cancelled")
        for _ in range(3):
            # A running attempt is the one cancelled; otherwise the next one, which will
            # now never start.
            attempt = run.attempt if run.status == "running" else run.attempt + 1
            token = Cancellation(run.run_id, upto=attempt, by=by, at=time.time())
            try:
                await announce_cancellation(self._broker, self._redis_prefix, token)
            except Exception as exc:
                msg = f"the broker did not take the cancellation ({type(exc).__name__}: {exc})"
                raise EnqueueError(msg) from exc
            error = {"type": "Cancelled", "message": f"cancelled by {by}"}
            async with self._database.engine.begin() as connection:
                done = await runs.mark_cancelled(
                    connection, run, attempt=attempt, error=error, at=datetime.now(UTC)
                )
            if done:
                return await self._existing(run_id)
            run = await self._existing(run_id)
            if (
                run.status == "cancelled"
                and run.attempt == attempt
                and (run.error or {}).get("message") == error["message"]
            ):
                # The worker heard the announcement and recorded this cancellation
                # before we did: the cancel has happened. (Another operator's cancel
                # that got there first is theirs: this one is a conflict, as it would
                # be a moment later.)
                return run
            if run.status not in CANCELLABLE_STATUSES:
                raise RunStateError(run_id, run.status, "cancelled", CANCELLABLE_STATUSES)
        # It kept changing under us (a worker starting and ending attempts meanwhile).
        raise RunStateError(run_id, run.status, "cancelled", CANCELLABLE_STATUSES)

    async def _existing(self, run_id: str) -> JobRun:
        run = await self.get_run(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        return run

    async def _run_in(self, run_id: str, statuses: tuple[str, ...], action: str) -> JobRun:
        """The run, if its status is one of ``statuses``; :class:`RunStateError` if not."""
        run = await self._existing(run_id)
        if run.status not in statuses:
            raise RunStateError(run_id, run.status, action, statuses)
        return run

    async def get_run(self, run_id: str) -> JobRun | None:
        """The run's current record, or None."""
        async with self._database.sessions() as session:
            return await runs.get_run(session, run_id=run_id)

    async def wait_for(
        self, run_id: str, *, timeout_s: float = 60.0, poll_s: float = 0.1
    ) -> JobRun:
        """Poll until the run reaches a final state; raises ``TimeoutError``."""
        async with asyncio.timeout(timeout_s):
            while True:
                run = await self.get_run(run_id)
                if run is not None and run.status in TERMINAL_STATUSES:
                    return run
                await asyncio.sleep(poll_s)

    async def _existing_for(self, request: RunRequest) -> Submission | None:
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
            async with asyncio.timeout(self.claim_timeout_s):
                await self.resend([run.run_id])
        except (EnqueueError, TimeoutError) as exc:
            reason = (
                f"no answer within {self.claim_timeout_s:g} s"
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


def _chunks(requests: Sequence[RunRequest]) -> Iterator[Sequence[RunRequest]]:
    """A batch's runs as sent: ``FIRST_CHUNK`` of them, then ``SEND_CHUNK`` at a time."""
    if requests:
        yield requests[:FIRST_CHUNK]
    for start in range(FIRST_CHUNK, len(requests), SEND_CHUNK):
        yield requests[start : start + SEND_CHUNK]


_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def _check_idempotency_key(key: str | None) -> str | None:
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        msg = (
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces; "
            f"got {key[:40]!r}{'…' if len(key) > 40 else ''} ({len(key)} characters)"
        )
        raise InvalidIdempotencyKeyError(msg)
    return key


def _check_source(source: str) -> str:
    if source not in RUN_SOURCES:
        msg = f"source must be one of {', '.join(RUN_SOURCES)}; got {source!r}"
        raise ValueError(msg)
    return source
