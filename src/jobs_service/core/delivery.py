"""``deliver_to``: where a run's result goes, validated once wherever it is written.

Schedules, webhook routes and ``run_agent_task`` all take the same shape::

    {"teams_channel": "sales",
     "email": ["ops@example.com"]            # or {"to": [...], "cc": [...], "subject": "..."}
     "calendar": {"subject": "KPI review", "offset_minutes": 60, "attendees": [...]}}

Each key expands to one :class:`DeliveryTarget`; ``(run_id, channel, target)`` is the
unique key of a row in ``deliveries``, so a retried run never sends the same message to
the same place twice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jobs_service.core.text import PortableText

__all__ = [
    "CalendarTarget",
    "DeliverTo",
    "DeliveryChannel",
    "DeliveryTarget",
    "EmailTarget",
    "parse_deliver_to",
]

DeliveryChannel = Literal["teams", "email", "calendar"]
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")
_MAX_TARGET = 255


def _addresses(values: list[str]) -> list[str]:
    cleaned = [value.strip() for value in values]
    for value in cleaned:
        if not _EMAIL.fullmatch(value):
            msg = f"{value!r} is not an email address"
            raise ValueError(msg)
    return cleaned


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmailTarget(_Strict):
    """An email: recipients, copies and an optional subject."""

    to: list[PortableText] = Field(min_length=1, max_length=100, description="Recipient addresses.")
    cc: list[PortableText] = Field(
        default_factory=list, max_length=100, description="Copied addresses."
    )
    subject: PortableText | None = Field(
        None, max_length=255, description="Subject line; default: the run's title."
    )

    @field_validator("to", "cc")
    @classmethod
    def _valid(cls, value: list[str]) -> list[str]:
        return _addresses(value)


class CalendarTarget(_Strict):
    """A calendar event in the sender's calendar, inviting ``attendees``."""

    subject: PortableText | None = Field(
        None, max_length=255, description="Event subject; default: the run's title."
    )
    start: datetime | None = Field(None, description="Absolute start (with a UTC offset).")
    offset_minutes: int = Field(
        0, ge=0, le=525_600, description="Without start: minutes after delivery."
    )
    duration_minutes: int = Field(30, ge=1, le=1440, description="Length of the event.")
    attendees: list[PortableText] = Field(
        default_factory=list, max_length=500, description="Addresses invited to the event."
    )

    @field_validator("attendees")
    @classmethod
    def _valid(cls, value: list[str]) -> list[str]:
        return _addresses(value)

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            msg = "start needs a UTC offset, e.g. 2026-01-05T09:00:00+01:00"
            raise ValueError(msg)
        return value


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """One message to send: the channel, a stable target key and what to send."""

    channel: DeliveryChannel
    target: str
    spec: str | EmailTarget | CalendarTarget


class DeliverTo(_Strict):
    """Where a run's result goes; at least one destination."""

    teams_channel: PortableText | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Alias of a configured `[channels.teams.<alias>]` to post a card to.",
    )
    email: list[str] | EmailTarget | None = Field(
        None, description="Addresses to mail the result to, or a table with to, cc, subject."
    )
    calendar: CalendarTarget | None = Field(
        None, description="A calendar event to create in the sender's calendar."
    )

    @field_validator("email", mode="after")
    @classmethod
    def _email(cls, value: list[str] | EmailTarget | None) -> EmailTarget | None:
        if isinstance(value, list):
            return EmailTarget(to=value)
        return value

    @model_validator(mode="after")
    def _something(self) -> DeliverTo:
        if self.teams_channel is None and self.email is None and self.calendar is None:
            msg = "deliver_to needs at least one of teams_channel, email, calendar"
            raise ValueError(msg)
        return self

    def targets(self) -> list[DeliveryTarget]:
        """The messages this asks for, in a fixed order (Teams, email, calendar)."""
        found: list[DeliveryTarget] = []
        if self.teams_channel is not None:
            found.append(DeliveryTarget("teams", self.teams_channel, self.teams_channel))
        if isinstance(self.email, EmailTarget):
            key = ",".join(sorted(address.lower() for address in self.email.to))
            found.append(DeliveryTarget("email", _bounded(key), self.email))
        if self.calendar is not None:
            key = self.calendar.subject or "event"
            found.append(DeliveryTarget("calendar", _bounded(key), self.calendar))
        return found

    def as_json(self) -> dict[str, Any]:
        """The JSON stored with a schedule or run (defaults left out)."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


def parse_deliver_to(value: DeliverTo | dict[str, Any] | None) -> DeliverTo | None:
    """``deliver_to`` as stored (a JSON object) → the validated model."""
    if value is None or isinstance(value, DeliverTo):
        return value
    return DeliverTo.model_validate(value)


def _bounded(key: str) -> str:
    if len(key) <= _MAX_TARGET:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{key[: _MAX_TARGET - 18]}~{digest}"
