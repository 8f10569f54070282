"""A run before it is queued: the options a producer gives, the validated request that is
recorded and sent, and the answer to a submit.

Every producer's run goes through :func:`prepare_request`, so the HTTP API, the
scheduler, webhooks and Python callers apply the same rules to arguments, delivery
targets, sources and idempotency keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict

import orjson
from pydantic import ValidationError

from jobs_service.client._errors import InvalidIdempotencyKeyError
from jobs_service.core.delivery import DeliverTo
from jobs_service.core.ids import new_run_id
from jobs_service.infrastructure.models import RUN_SOURCES
from jobs_service.infrastructure.repositories import runs
from jobs_service.infrastructure.wire import STORE_RESULT_LABEL, encode_message, prepare_labels
from jobs_service.tasks.registry import InvalidKwargsError, TaskInfo

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from taskiq import TaskiqMessage

__all__ = ["RunOptions", "RunRequest", "Submission", "prepare_batch", "prepare_request"]


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
class Submission:
    """The answer to a submit: the run, and whether it already existed."""

    run_id: str
    status: str
    replayed: bool


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


def prepare_request(
    info: TaskInfo,
    kwargs: Mapping[str, Any] | None,
    options: RunOptions,
    *,
    teams_channels: frozenset[str],
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
        deliver_to=_delivery_targets(
            info,
            deliver_to,
            teams_channels=teams_channels,
            check_channels=options.get("check_channels", True),
        ),
    )


def prepare_batch(
    info: TaskInfo,
    kwargs_list: Sequence[Mapping[str, Any]],
    options: RunOptions,
    *,
    teams_channels: frozenset[str],
) -> list[RunRequest]:
    """Every run of a batch validated before any is queued, so a bad item rejects the
    whole batch; its errors are located as in the batch's body (``items[i].kwargs``)."""
    requests = []
    for index, kwargs in enumerate(kwargs_list):
        try:
            requests.append(prepare_request(info, kwargs, options, teams_channels=teams_channels))
        except InvalidKwargsError as exc:
            errors = [
                {**error, "loc": ["items", index, "kwargs", *error["loc"]]} for error in exc.errors
            ]
            raise InvalidKwargsError(exc.task, errors) from None
    return requests


def _delivery_targets(
    info: TaskInfo,
    value: Mapping[str, Any] | None,
    *,
    teams_channels: frozenset[str],
    check_channels: bool,
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
    if check_channels and alias is not None and alias not in teams_channels:
        known = ", ".join(sorted(teams_channels)) or "none configured"
        error = {
            "loc": ["deliver_to", "teams_channel"],
            "msg": f"unknown Teams channel {alias!r} (configured: {known})",
            "type": "unknown_channel",
        }
        raise InvalidKwargsError(info.name, [error])
    return targets.as_json()


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
