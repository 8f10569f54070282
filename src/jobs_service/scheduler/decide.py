"""What a due schedule does at a tick: which fire runs, which were missed, what is next.

Pure: a stored schedule and the tick's horizon in, a :class:`Decision` out; the
dispatcher claims, advances and reports it. Fires older than the catch-up window (at
least the grace) are *missed*; of the rest only the newest runs (*coalesced*). A paused
schedule's fires are neither run nor missed: it only moves on, so the fires a pause
passed over (through a scheduler restart, say) are not reported as missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from jobs_service.scheduler.specs import timing_for

if TYPE_CHECKING:
    from datetime import datetime

    from jobs_service.core.timing import Timing
    from jobs_service.infrastructure.models import Schedule

__all__ = ["MAX_MISSED_COUNTED", "Decision", "decide"]

#: Missed fires counted one by one before the rest are skipped over in one jump.
MAX_MISSED_COUNTED = 1000
#: Fires walked inside a catch-up window before giving up on finding the newest.
_MAX_WINDOW_STEPS = 20_000
_JUST_BEFORE = timedelta(microseconds=1)


@dataclass(slots=True)
class Decision:
    """One due schedule at one tick."""

    schedule: Schedule
    #: The newest fire inside the window (the one that runs), or None.
    fire_time: datetime | None
    missed: int
    missed_range: tuple[datetime, datetime] | None
    #: The first fire after the horizon; None when the schedule has no more fires.
    next_fire_at: datetime | None

    @property
    def wants_claim(self) -> bool:
        """An enabled schedule with a fire to run now."""
        return self.fire_time is not None and self.schedule.enabled


def decide(schedule: Schedule, horizon: datetime, grace_s: float) -> Decision:
    """Decide a due schedule at ``horizon``.

    Raises what :func:`~jobs_service.scheduler.specs.timing_for` raises for a schedule
    this host cannot read (an unknown zone, an invalid cron).
    """
    timing = timing_for(schedule)
    window = max(float(schedule.catchup_window_s), grace_s)
    window_start = horizon - timedelta(seconds=window)
    if schedule.enabled:
        first, missed, missed_range = _walk_missed(timing, schedule.next_fire_at, window_start)
    else:
        first, missed, missed_range = _skip_to(timing, schedule.next_fire_at, window_start), 0, None
    latest = _latest_due(timing, first, horizon)
    return Decision(schedule, latest, missed, missed_range, timing.next_after(horizon))


def _walk_missed(
    timing: Timing, current: datetime | None, window_start: datetime
) -> tuple[datetime | None, int, tuple[datetime, datetime] | None]:
    """The first fire inside the window, and the fires before it, counted."""
    missed, first_missed, last_missed = 0, None, None
    while current is not None and current < window_start:
        if missed == MAX_MISSED_COUNTED:  # a long outage: jump to the window
            current = timing.next_after(window_start - _JUST_BEFORE)
            break
        first_missed = first_missed or current
        last_missed = current
        missed += 1
        current = timing.next_after(current)
    missed_range = (first_missed, last_missed) if first_missed and last_missed else None
    return current, missed, missed_range


def _skip_to(timing: Timing, current: datetime | None, window_start: datetime) -> datetime | None:
    """The first fire inside the window, without counting the ones before it."""
    if current is None or current >= window_start:
        return current
    return timing.next_after(window_start - _JUST_BEFORE)


def _latest_due(timing: Timing, first: datetime | None, horizon: datetime) -> datetime | None:
    """The newest fire in ``[first, horizon]`` (coalescing), or None."""
    if first is None or first > horizon:
        return None
    shortcut = getattr(timing, "last_at_or_before", None)
    if shortcut is not None:
        on_grid: datetime | None = shortcut(horizon)
        return on_grid if on_grid is not None and on_grid > first else first
    latest = first
    current = timing.next_after(first)
    for _ in range(_MAX_WINDOW_STEPS):
        if current is None or current > horizon:
            break
        latest = current
        current = timing.next_after(current)
    return latest
