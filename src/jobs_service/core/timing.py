"""When a schedule fires next: cron, fixed interval and one-off timings.

The scheduler only ever asks one question, "what is the first fire strictly after this
instant?", so each policy is a small object with one deciding method, ``next_after``.
Keeping the calendar arithmetic here, pure and without I/O, lets it be tested against
hand-computed zone rules instead of against a clock.

Everything that comes out is an aware UTC datetime: the database stores UTC and a naive
datetime in a scheduler is a bug waiting for the next DST change, so naive input is
refused rather than guessed at.

Cron expressions are the classic five fields, matched against the *local wall clock* of
an IANA zone. croniter's own time-zone handling has had DST bugs, and its extensions
(seconds, ``L``, ``W``, ``#``) would let an expression mean something other than what an
operator used to crontab expects, so parsing and the zone arithmetic live here.

DST semantics follow Vixie cron / cronie, the behaviour operators already know:

* Wildcard-hour jobs (the hour field is exactly ``*``, e.g. ``*/15 * * * *``) follow real
  time. They fire at every real instant whose local wall time matches: wall times that a
  spring-forward gap skips simply do not happen (no catch-up fire), and during a
  fall-back repeated hour they fire in *both* passes. ``*/30 * * * *`` in Europe/Berlin on
  2026-10-25 fires at 00:00, 00:30 UTC (02:00, 02:30 CEST) and again at 01:00, 01:30 UTC
  (02:00, 02:30 CET).
* Fixed-hour jobs (any other hour field, e.g. ``30 2 * * *``) run once per matching local
  time. A local time that does not exist fires once, at the first real instant after the
  gap, which is the transition itself: in Berlin on 2026-03-29, ``30 2 * * *`` fires at
  01:00 UTC (03:00 CEST), and the four missing matches of ``*/15 2 * * *`` collapse into
  that one fire. A local time that happens twice fires only at its first occurrence:
  ``30 2 * * *`` fires at 00:30 UTC (02:30 CEST) on 2026-10-25 and not again an hour later.

Day matching also follows Vixie cron: when the day-of-month and day-of-week fields are
both restricted, a day matches if *either* does; a field that starts with ``*`` (``*`` or
``*/n``) counts as unrestricted for that rule, so the two are then combined with AND.
"""

from __future__ import annotations

import bisect
import calendar
import re
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jobs_service.core.errors import JobsError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "CronTiming",
    "IntervalTiming",
    "InvalidScheduleError",
    "OnceTiming",
    "Timing",
    "upcoming",
    "validate_timezone",
]

_FIELD_NAMES = "minute hour day month weekday"
_OFFSET_HINT = "e.g. 2026-03-01T09:00:00+08:00"
_EXTENSION_MARKS = re.compile(r"[#?]")
_EXTENSION_VALUE = re.compile(r"[0-9]*[LW]|LW", re.IGNORECASE)  # L, 5L, 15W, LW
_NUMBER = re.compile(r"[0-9]+|[A-Za-z]+")
_DIGITS = re.compile(r"[0-9]+")
_MONTH_NAMES = {
    name: index
    for index, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
        start=1,
    )
}
_DAY_NAMES = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
_MAX_DAYS = {month: calendar.monthrange(2000, month)[1] for month in range(1, 13)}
_ONE_SECOND = timedelta(seconds=1)
_ONE_DAY = timedelta(days=1)


class InvalidScheduleError(JobsError, ValueError):
    """A schedule that cannot work; the message names the part to fix, for an operator."""


class Timing(Protocol):
    """The one question the scheduler asks of every schedule policy."""

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire strictly after `moment` (aware), as an aware UTC datetime.

        None means the schedule will never fire again.
        """
        ...


def validate_timezone(name: str) -> ZoneInfo:
    """Resolve an IANA zone name, turning zoneinfo's assorted errors into one clear one."""
    _require_str(name, "timezone must be an IANA name such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        msg = f"unknown timezone {name!r} (use an IANA name such as Europe/Berlin)"
        raise InvalidScheduleError(msg) from None


def upcoming(timing: Timing, after: datetime, count: int) -> list[datetime]:
    """The next `count` fires strictly after `after`, fewer if the schedule runs out.

    This is what an operator previews before saving a schedule, so it is cheap for every
    policy, including rare cron dates such as 29 February.
    """
    _require_aware_moment(after)
    if count < 0:
        msg = f"count must not be negative, got {count}"
        raise ValueError(msg)
    fires: list[datetime] = []
    moment = after
    while len(fires) < count:
        fire = timing.next_after(moment)
        if fire is None:
            break
        fires.append(fire)
        moment = fire
    return fires


def _require_str(value: object, what: str) -> str:
    """Configuration arrives from JSON and TOML, so a wrong type gets an operator message."""
    if not isinstance(value, str):
        msg = f"{what}, got {type(value).__name__}"
        raise InvalidScheduleError(msg)
    return value


def _is_aware(value: object) -> bool:
    return isinstance(value, datetime) and value.utcoffset() is not None


def _require_aware_moment(moment: datetime) -> datetime:
    """Return `moment` in UTC; a naive one is a caller bug, hence plain ValueError."""
    if not _is_aware(moment):
        msg = f"moment must be an aware datetime (with a UTC offset), got {moment!r}"
        raise ValueError(msg)
    return moment.astimezone(UTC)


def _require_aware_argument(name: str, value: datetime) -> datetime:
    """Return `value` in UTC; a naive one came from configuration, hence the hint."""
    if not _is_aware(value):
        msg = f"{name!r} needs a UTC offset, {_OFFSET_HINT}"
        raise InvalidScheduleError(msg)
    return value.astimezone(UTC)


# --------------------------------------------------------------------------- cron parsing


@dataclass(frozen=True)
class _Field:
    """How one cron field is written and which values it allows."""

    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, _MONTH_NAMES),
    _Field("weekday", 0, 7, _DAY_NAMES),
)


def _parse_expression(expression: object) -> tuple[str, tuple[frozenset[int], ...]]:
    """Normalise the spacing, then parse all five fields; raise at the first problem."""
    text = " ".join(_require_str(expression, "cron expression must be a string").split())
    if text.startswith("@"):
        msg = (
            f"cron {text!r}: macros such as @hourly are not supported, "
            "write the 5 fields instead (e.g. '0 * * * *')"
        )
        raise InvalidScheduleError(msg)
    parts = text.split(" ") if text else []
    if len(parts) != len(_FIELDS):
        msg = f"cron {text!r}: expected 5 fields ({_FIELD_NAMES}), got {len(parts)}"
        if len(parts) > len(_FIELDS):
            msg += " (seconds and year fields are not supported)"
        raise InvalidScheduleError(msg)
    try:
        values = tuple(
            _parse_field(part, field) for part, field in zip(parts, _FIELDS, strict=True)
        )
    except _FieldError as error:
        msg = f"cron {text!r}: {error}"
        raise InvalidScheduleError(msg) from None
    return text, values


class _FieldError(Exception):
    """A problem inside one field; the caller adds the whole expression for context."""


def _parse_field(text: str, field: _Field) -> frozenset[int]:
    """Expand one field (a comma list of items) to the set of values it allows."""
    if _EXTENSION_MARKS.search(text):
        raise _FieldError(_extension_message(text, field))
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            msg = f"{field.name} {text!r} has an empty list item"
            raise _FieldError(msg)
        values.update(_parse_item(item, field))
    if field.high == 7:  # weekday: 7 is another spelling of Sunday
        values = {value % 7 for value in values}
    return frozenset(values)


def _parse_item(item: str, field: _Field) -> range:
    """Expand ``*``, ``n``, ``a-b``, ``*/s`` or ``a-b/s`` to the values it allows."""
    span, slash, step_text = item.partition("/")
    if span == "*":
        start, stop = field.low, field.high
    elif "-" in span:
        first, _, last = span.partition("-")
        start, stop = _parse_value(first, field, item), _parse_value(last, field, item)
        if start > stop:
            msg = (
                f"{field.name} range {item!r} runs backwards "
                f"(split it, e.g. '{first}-{field.high},{field.low}-{last}')"
            )
            raise _FieldError(msg)
    elif slash:
        msg = f"{field.name} step {item!r} needs a range, e.g. '{span}-{field.high}/{step_text}'"
        raise _FieldError(msg)
    else:
        start = stop = _parse_value(span, field, item)
    step = _parse_step(step_text, field, item) if slash else 1
    return range(start, stop + 1, step)


def _parse_value(text: str, field: _Field, item: str) -> int:
    """One number or name, checked against the field's range."""
    if _EXTENSION_VALUE.fullmatch(text) and not (field.names and text.upper() in field.names):
        raise _FieldError(_extension_message(item, field))
    if not _NUMBER.fullmatch(text):
        msg = f"{field.name} {item!r} is not a number, range, list or step"
        raise _FieldError(msg)
    if not _DIGITS.fullmatch(text):
        return _parse_name(text, field)
    value = int(text)
    if not field.low <= value <= field.high:
        sunday = " (0 and 7 are Sunday)" if field.high == 7 else ""
        msg = f"{field.name} {value} is out of range {field.low}-{field.high}{sunday}"
        raise _FieldError(msg)
    return value


def _extension_message(text: str, field: _Field) -> str:
    """Say plainly that croniter/Quartz extensions are refused, not merely mistyped."""
    return f"{field.name} {text!r} uses a non-standard extension (L, W, # and ? are not supported)"


def _parse_name(text: str, field: _Field) -> int:
    """A month or weekday name such as ``jan`` or ``MON``; other fields take numbers only."""
    if field.names is None:
        msg = f"{field.name} {text!r} is not a number"
        raise _FieldError(msg)
    if text.upper() not in field.names:
        first, *_, last = field.names
        msg = f"{field.name} {text!r} is not a number or a {field.name} name ({first}-{last})"
        raise _FieldError(msg)
    return field.names[text.upper()]


def _parse_step(text: str, field: _Field, item: str) -> int:
    """The ``/s`` of an item, between 1 and the field's largest value."""
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= field.high:
        msg = f"{field.name} step in {item!r} must be a number from 1 to {field.high}"
        raise _FieldError(msg)
    return int(text)


# ------------------------------------------------------------------------------ timings


class CronTiming:
    """A five-field cron expression matched against the wall clock of an IANA zone."""

    __slots__ = (
        "_day_or",
        "_days",
        "_fixed_hour",
        "_months",
        "_times",
        "_weekdays",
        "_zone",
        "expression",
        "timezone",
    )

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        fields, (minutes, hours, days, months, weekdays) = _parse_expression(expression)
        self.expression = fields
        self.timezone = timezone
        self._zone = validate_timezone(timezone)
        _, hour_text, day_text, _, weekday_text = fields.split(" ")
        self._fixed_hour = hour_text != "*"
        self._day_or = not (day_text.startswith("*") or weekday_text.startswith("*"))
        self._times = sorted(hour * 60 + minute for hour in hours for minute in minutes)
        self._days = days
        self._months = sorted(months)
        self._weekdays = weekdays
        self._check_can_fire()

    def __repr__(self) -> str:
        return f"CronTiming({self.expression!r}, timezone={self.timezone!r})"

    def __str__(self) -> str:
        return f"cron {self.expression!r} ({self.timezone})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CronTiming):
            return NotImplemented
        return (self.expression, self.timezone) == (other.expression, other.timezone)

    def __hash__(self) -> int:
        return hash((CronTiming, self.expression, self.timezone))

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire strictly after `moment`, with the DST rules of the module docstring.

        Matching wall times are walked in order from a little before `moment`'s own wall
        time; each one resolves to zero, one or two real instants. The earliest instant of
        each wall time only grows as the walk goes on, so the walk stops at the first wall
        time whose earliest instant is past `moment`.
        """
        after = _require_aware_moment(moment)
        best: datetime | None = None
        try:
            start = self._start_wall(after)
            for wall in self._walls_from(start):
                instants = self._instants(wall)
                later = [instant for instant in instants if instant > after]
                if later and (best is None or min(later) < best):
                    best = min(later)
                if instants and instants[0] > after:
                    return best
        except OverflowError:
            pass  # walked off either end of the calendar (years 1 and 9999)
        return best

    def _check_can_fire(self) -> None:
        """Refuse day/month combinations that never occur, such as ``0 0 30 2 *``."""
        if self._day_or:
            return  # the weekday field alone matches every week
        if any(day <= _MAX_DAYS[month] for month in self._months for day in self._days):
            return
        days = ", ".join(str(day) for day in sorted(self._days))
        msg = f"cron {self.expression!r}: never fires, no month in the month field has day {days}"
        raise InvalidScheduleError(msg)

    def _start_wall(self, after: datetime) -> datetime:
        """The wall minute to start walking from.

        Right before a fall-back, wall times already passed come round again, so the walk
        starts as far before `after` as the clock is about to step back.
        """
        offset = after.astimezone(self._zone).utcoffset()
        try:
            offset_later = (after + _ONE_DAY).astimezone(self._zone).utcoffset()
        except OverflowError:
            offset_later = offset
        step_back = max(timedelta(0), (offset or timedelta(0)) - (offset_later or timedelta(0)))
        local = (after - step_back).astimezone(self._zone)
        return local.replace(tzinfo=None, second=0, microsecond=0, fold=0)

    def _walls_from(self, start: datetime) -> Iterator[datetime]:
        """Matching naive wall-clock minutes at or after `start`, in order, without end.

        Whole months outside the month field are skipped, so rare dates such as
        29 February cost a few hundred steps, not years of minutes.
        """
        day = start.date()
        first = bisect.bisect_left(self._times, start.hour * 60 + start.minute)
        while True:
            if day.month not in self._months:
                day = self._next_month_start(day)
                first = 0
                continue
            if self._day_matches(day):
                for minute_of_day in self._times[first:]:
                    hour, minute = divmod(minute_of_day, 60)
                    yield datetime(day.year, day.month, day.day, hour, minute)  # noqa: DTZ001
            day += _ONE_DAY
            first = 0

    def _next_month_start(self, day: date) -> date:
        """The first day of the next month the month field allows."""
        index = bisect.bisect_right(self._months, day.month)
        if index < len(self._months):
            return date(day.year, self._months[index], 1)
        if day.year == MAXYEAR:
            msg = "no month left before year 10000"
            raise OverflowError(msg)
        return date(day.year + 1, self._months[0], 1)

    def _day_matches(self, day: date) -> bool:
        """Vixie cron's day rule: OR when both day fields are restricted, else AND."""
        by_date = day.day in self._days
        by_weekday = day.isoweekday() % 7 in self._weekdays
        return (by_date or by_weekday) if self._day_or else (by_date and by_weekday)

    def _instants(self, wall: datetime) -> tuple[datetime, ...]:
        """The real UTC instants at which a matching wall time fires, earliest first."""
        first = wall.replace(tzinfo=self._zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self._zone, fold=1).astimezone(UTC)
        if first.astimezone(self._zone).replace(tzinfo=None) != wall:
            # In a spring-forward gap: fold=0 used the offset before the change (landing
            # after it), fold=1 the offset after it (landing before it).
            return (self._transition(second, first),) if self._fixed_hour else ()
        if first != second and not self._fixed_hour:
            return (first, second)  # repeated by a fall-back: both passes
        return (first,)

    def _transition(self, before: datetime, after: datetime) -> datetime:
        """The instant the offset changes between two UTC instants, to the second."""
        target = after.astimezone(self._zone).utcoffset()
        while after - before > _ONE_SECOND:
            middle = (before + (after - before) / 2).replace(microsecond=0)
            if middle.astimezone(self._zone).utcoffset() == target:
                after = middle
            else:
                before = middle
        return after


class IntervalTiming:
    """Every `seconds` seconds on a fixed grid, so fires never drift with run time."""

    __slots__ = ("_step", "anchor", "seconds")

    def __init__(self, seconds: int, anchor: datetime) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            msg = f"interval must be a whole number of seconds, got {seconds!r}"
            raise InvalidScheduleError(msg)
        if seconds < 1:
            msg = f"interval must be at least 1 second, got {seconds}"
            raise InvalidScheduleError(msg)
        self.seconds = seconds
        self.anchor = _require_aware_argument("anchor", anchor).replace(microsecond=0)
        self._step = timedelta(seconds=seconds)

    def __repr__(self) -> str:
        return f"IntervalTiming({self.seconds}, anchor={self.anchor.isoformat()!r})"

    def __str__(self) -> str:
        return f"every {self.seconds}s from {self.anchor.isoformat()}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntervalTiming):
            return NotImplemented
        return (self.seconds, self.anchor) == (other.seconds, other.anchor)

    def __hash__(self) -> int:
        return hash((IntervalTiming, self.seconds, self.anchor))

    def next_after(self, moment: datetime) -> datetime | None:
        """The first grid point ``anchor + k * seconds`` (k >= 1) strictly after `moment`.

        The anchor itself is not a fire: it is when the schedule started counting.
        """
        after = _require_aware_moment(moment)
        steps = max(1, (after - self.anchor) // self._step + 1)
        try:
            return self.anchor + steps * self._step
        except OverflowError:
            return None

    def last_at_or_before(self, moment: datetime) -> datetime | None:
        """The latest fire at or before `moment`, without walking the grid (catch-up
        after a long outage asks this of a one-second interval)."""
        at = _require_aware_moment(moment)
        steps = (at - self.anchor) // self._step
        return self.anchor + steps * self._step if steps >= 1 else None


class OnceTiming:
    """A single fire at a fixed instant."""

    __slots__ = ("at",)

    def __init__(self, at: datetime) -> None:
        self.at = _require_aware_argument("at", at)

    def __repr__(self) -> str:
        return f"OnceTiming({self.at.isoformat()!r})"

    def __str__(self) -> str:
        return f"once at {self.at.isoformat()}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OnceTiming):
            return NotImplemented
        return self.at == other.at

    def __hash__(self) -> int:
        return hash((OnceTiming, self.at))

    def next_after(self, moment: datetime) -> datetime | None:
        """`at` while it is still ahead of `moment`, then None for good."""
        return self.at if self.at > _require_aware_moment(moment) else None

    def is_past(self, now: datetime) -> bool:
        """Whether the fire time has been reached, for callers that refuse stale one-offs."""
        return self.at <= _require_aware_moment(now)
