"""The audit trail: every operator action, with who, what, on what and how it ended.

An operator action is any mutating request (POST, PUT, PATCH, DELETE) under ``/v1/``,
whichever router serves it, so endpoints added later are recorded without being
listed here. Webhook ingestion (``/webhooks/...``) is a sender's delivery, not an
operator's action, and is not recorded; replaying an event (``POST
/v1/webhooks/events/{id}/replay``) is.

Entries are queued once the response has been sent and written in batches by a
background task (as run events are), so auditing costs a request nothing. A failed
write is retried a few times; an entry that still cannot be written is logged as
``audit-write-failed`` with its actor, action, target and outcome, so the log keeps
the trail, and a done action never turns into an error.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobs_service.core.logging import get_logger
from jobs_service.gateway.paths import route_path
from jobs_service.gateway.request_log import CLIENT_CLOSED_REQUEST
from jobs_service.infrastructure.database import describe_database_error
from jobs_service.infrastructure.repositories.audit import NewAuditEntry, insert_entries

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from jobs_service.infrastructure.database import Database
    from jobs_service.infrastructure.runtime import Runtime

__all__ = [
    "ANONYMOUS",
    "AuditMiddleware",
    "AuditWriter",
    "audit_entry",
    "audit_writer",
    "is_operator_action",
]

#: The actor of a request that was refused before a key was recognised (401, 403).
ANONYMOUS = "anonymous"
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_log = get_logger("jobs_service.gateway.audit")


def is_operator_action(scope: Scope) -> bool:
    """A mutating HTTP request under ``/v1/`` (under any path prefix: see
    :mod:`~jobs_service.gateway.paths`)."""
    return (
        scope["type"] == "http"
        and scope["method"] in _MUTATING
        and route_path(scope).startswith("/v1/")
    )


def audit_entry(scope: Scope, status: int, location: str | None) -> NewAuditEntry:
    """Describe a finished request from what routing and authentication left in its scope.

    ``action`` is the method and the route template (``PATCH
    /v1/schedules/{schedule_id}``), or the raw path when no route matched; ``target`` the
    path parameter, else the last segment of the ``Location`` of what was created;
    ``actor`` the API key's name (``local`` for a loopback caller when no keys are
    configured, ``anonymous`` when the request was refused before a key was known).
    """
    path = route_path(scope)
    template = getattr(scope.get("route"), "path", None)
    state: dict[str, Any] = scope.get("state") or {}
    target = state.get("audit_target") or _target(scope.get("path_params") or {}, location)
    client = scope.get("client")
    detail: dict[str, Any] = {"path": path}
    if client:
        detail["client"] = client[0]
    if location:
        detail["location"] = location
    return NewAuditEntry(
        at=datetime.now(UTC),
        actor=str(state.get("principal") or ANONYMOUS),
        action=f"{scope['method']} {template if isinstance(template, str) else path}",
        target=target,
        outcome=status,
        request_id=state.get("request_id"),
        detail=detail,
    )


def _target(params: dict[str, Any], location: str | None) -> str | None:
    """The path parameter, numbers in their plain spelling (``/v1/schedules/01`` is
    schedule 1), else the last segment of the ``Location`` of what was created. A
    route that knows its target better (a run addressed by its numeric id) sets
    ``request.state.audit_target`` instead."""
    if len(params) == 1:
        return _plain(str(next(iter(params.values()))))
    if params:
        return ",".join(f"{name}={_plain(str(value))}" for name, value in params.items())
    if location:
        return location.rstrip("/").rsplit("/", 1)[-1] or None
    return None


def _plain(value: str) -> str:
    if value.isascii() and value.isdigit() and len(value) < 19:
        return str(int(value))
    return value


class AuditWriter:
    """Buffers audit entries and writes them in batches from one background task.

    ``record`` never blocks and never touches the database. Every ``flush_interval_s``
    (or as soon as ``batch_size`` entries wait) the buffer is written in one statement;
    a failed write is retried ``attempts`` times with backoff, then its entries are
    logged as ``audit-write-failed``. Beyond ``max_pending`` waiting entries (a long
    outage) new ones go straight to that log line. ``aclose`` writes what is left.
    """

    def __init__(
        self,
        database: Database,
        *,
        flush_interval_s: float = 0.1,
        batch_size: int = 200,
        max_pending: int = 10_000,
        attempts: int = 3,
    ) -> None:
        self._database = database
        self._interval = flush_interval_s
        self._batch_size = batch_size
        self._max_pending = max_pending
        self._attempts = attempts
        self._pending: list[NewAuditEntry] = []
        self._failures = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        """Entries waiting to be written."""
        return len(self._pending)

    def record(self, entry: NewAuditEntry) -> None:
        """Queue an entry for the next write."""
        if self._closing or len(self._pending) >= self._max_pending:
            _log_lost([entry], "the audit writer is closed or its buffer is full")
            return
        self._pending.append(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="audit-writer")
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    async def flush(self, *, final: bool = False) -> None:
        """Write what waits now; never raises. ``final``: give up on a failure at once."""
        async with self._lock:
            while self._pending:
                batch = self._pending[: self._batch_size]
                try:
                    async with self._database.engine.begin() as connection:
                        await insert_entries(connection, batch)
                except Exception as exc:  # noqa: BLE001 - an audit failure must not spread
                    self._failures += 1
                    if final or self._failures >= self._attempts:
                        del self._pending[: len(batch)]
                        self._failures = 0
                        _log_lost(batch, describe_database_error(exc))
                        continue
                    return
                del self._pending[: len(batch)]
                self._failures = 0

    async def aclose(self) -> None:
        """Stop the background task and write what is left (called by ``Runtime.stop``).

        The task is woken and let finish, not cancelled: a write cut off after its commit
        would be written again."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush(final=True)

    async def _run(self) -> None:
        while not self._closing:
            # After a failed write, back off (0.5 s, 1 s, 2 s, … up to 5 s) before retrying.
            delay = min(0.5 * 2 ** (self._failures - 1), 5.0) if self._failures else self._interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            await self.flush()


def _log_lost(entries: list[NewAuditEntry], reason: str) -> None:
    for entry in entries:
        _log.error(
            "audit-write-failed",
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            outcome=entry.outcome,
            audit_request_id=entry.request_id,
            at=entry.at.isoformat(),
            error=reason,
        )


def audit_writer(runtime: Runtime) -> AuditWriter:
    """This process's audit writer (built on first use, closed with the runtime)."""
    return runtime.resource("audit-writer", lambda: AuditWriter(runtime.database))


class AuditMiddleware:
    """Records every operator action once its response is sent.

    Sits outside the request-log middleware: that one assigns the request id and the
    routes' authentication records the principal, both in the request's scope, which
    this middleware reads after the app returns.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_operator_action(scope):
            await self.app(scope, receive, send)
            return
        status: int | None = None
        location: str | None = None

        async def send_and_note(message: Message) -> None:
            nonlocal status, location
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"location":
                        location = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            _record(scope, audit_entry(scope, 500, location))
            raise
        if status is None:  # not answered: the client left first, or nothing answered
            closed = (scope.get("state") or {}).get("client_closed")
            status = CLIENT_CLOSED_REQUEST if closed else 500
        _record(scope, audit_entry(scope, status, location))


def _record(scope: Scope, entry: NewAuditEntry) -> None:
    runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    if runtime is None:
        _log_lost([entry], "the gateway's runtime is not started")
        return
    audit_writer(runtime).record(entry)
