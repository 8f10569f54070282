"""What an operator submits to create or change a schedule, validated up front.

A bad cron expression, unknown timezone, zero interval or a one-off time in the past
is a 422 at submit time, with a message naming the problem, never a schedule that
silently never fires.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from jobs_service.core.text import PortableText
from jobs_service.core.timezones import require_portable_timezone
from jobs_service.core.timing import (
    CronTiming,
    IntervalTiming,
    InvalidScheduleError,
    OnceTiming,
    Timing,
)

if TYPE_CHECKING:
    from pydantic.config import JsonDict

    from jobs_service.infrastructure.models import Schedule

__all__ = [
    "CronSpec",
    "IntervalSpec",
    "OnceSpec",
    "ScheduleDraft",
    "SchedulePatch",
    "ScheduleSpec",
    "timing_for",
]

Overlap = Literal["skip", "allow", "buffer_one"]
_TEN_YEARS_S = 10 * 365 * 86_400


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CronSpec(_Strict):
    """Five-field cron in an IANA timezone (UTC by default): one of the zones every host
    reads the same way (not ``localtime``, ``posix/…``, ``right/…``, ``Factory``)."""

    type: Literal["cron"]
    cron: str = Field(max_length=200, examples=["0 9 * * 1"])
    timezone: str = Field("UTC", examples=["Asia/Singapore"])

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            require_portable_timezone(value)
        except InvalidScheduleError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        try:
            CronTiming(value)
        except InvalidScheduleError as exc:
            raise ValueError(str(exc)) from None
        return " ".join(value.split())


class IntervalSpec(_Strict):
    """Every ``seconds`` seconds."""

    type: Literal["interval"]
    seconds: int = Field(ge=1, le=_TEN_YEARS_S, examples=[3600])


class OnceSpec(_Strict):
    """Once, at ``at`` (with a UTC offset); the schedule is finished afterwards."""

    type: Literal["once"]
    at: AwareDatetime = Field(examples=["2026-03-01T09:00:00+08:00"])

    @field_validator("at")
    @classmethod
    def _in_range(cls, value: datetime) -> datetime:
        try:
            converted = value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is out of range") from None
        if converted.year > 9000:
            msg = "is too far in the future"
            raise ValueError(msg)
        return value


ScheduleSpec = Annotated[CronSpec | IntervalSpec | OnceSpec, Field(discriminator="type")]


class ScheduleDraft(_Strict):
    """``POST /v1/schedules``."""

    name: PortableText = Field(min_length=1, max_length=200)
    task: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    schedule: ScheduleSpec
    overlap: Overlap = "skip"
    catchup_window_s: int = Field(0, ge=0, le=7 * 86_400)
    deliver_to: dict[str, Any] | None = None
    enabled: bool = True
    description: PortableText | None = Field(None, max_length=2000)


def _document_not_nullable(schema: JsonDict) -> None:
    """Document the fields that may be left out but not set to null as not nullable:
    they are ``X | None`` in the model only so that "left out" reads as None."""
    properties = cast("dict[str, dict[str, Any]]", schema["properties"])
    for name in _NOT_NULLABLE:
        field = properties[name]
        field.pop("default", None)
        (value,) = [variant for variant in field.pop("anyOf") if variant != {"type": "null"}]
        field.update(value)


class SchedulePatch(_Strict):
    """``PATCH /v1/schedules/{id}``: only the fields given change."""

    model_config = ConfigDict(json_schema_extra=_document_not_nullable)

    name: PortableText | None = Field(None, min_length=1, max_length=200)
    kwargs: dict[str, Any] | None = None
    schedule: ScheduleSpec | None = None
    overlap: Overlap | None = None
    catchup_window_s: int | None = Field(None, ge=0, le=7 * 86_400)
    deliver_to: dict[str, Any] | None = None
    enabled: bool | None = None
    paused_note: PortableText | None = Field(None, max_length=500)
    description: PortableText | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _required_fields_are_not_null(self) -> SchedulePatch:
        if not self.model_fields_set:
            msg = "nothing to change: give at least one field"
            raise ValueError(msg)
        nulls = sorted(
            name
            for name in _NOT_NULLABLE
            if name in self.model_fields_set and getattr(self, name) is None
        )
        if nulls:
            msg = f"{', '.join(nulls)} may be changed but not set to null"
            raise ValueError(msg)
        return self


_NOT_NULLABLE = ("name", "kwargs", "schedule", "overlap", "catchup_window_s", "enabled")


def timing_for(schedule: Schedule) -> Timing:
    """The timing policy of a stored schedule."""
    if schedule.kind == "cron":
        return CronTiming(schedule.cron or "", schedule.timezone)
    if schedule.kind == "interval":
        return IntervalTiming(schedule.interval_s or 0, schedule.anchor_at)
    return OnceTiming(schedule.at or datetime.now(UTC))


def spec_columns(spec: CronSpec | IntervalSpec | OnceSpec, now: datetime) -> dict[str, Any]:
    """Column values for a spec; the interval grid is anchored at ``now``."""
    if isinstance(spec, CronSpec):
        return {
            "kind": "cron",
            "cron": spec.cron,
            "timezone": spec.timezone,
            "interval_s": None,
            "at": None,
            "anchor_at": now,
        }
    if isinstance(spec, IntervalSpec):
        return {
            "kind": "interval",
            "cron": None,
            "timezone": "UTC",
            "interval_s": spec.seconds,
            "at": None,
            "anchor_at": now,
        }
    return {
        "kind": "once",
        "cron": None,
        "timezone": "UTC",
        "interval_s": None,
        "at": spec.at.astimezone(UTC),
        "anchor_at": now,
    }
