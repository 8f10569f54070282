"""Schedule timing: cron in local zones across DST, fixed intervals and one-offs.

Every expected instant below is worked out by hand from the published zone rules and
written as a literal UTC datetime, so the tests do not trust the module or croniter:

* Europe/Berlin 2026: CET (UTC+1) until 2026-03-29 01:00 UTC, when 02:00 CET jumps to
  03:00 CEST (UTC+2); back to CET at 2026-10-25 01:00 UTC, when 03:00 CEST becomes
  02:00 CET, so 02:00-02:59 happens twice.
* America/New_York 2026: EST (UTC-5) until 2026-03-08 07:00 UTC (02:00 EST -> 03:00 EDT);
  EDT (UTC-4) until 2026-11-01 06:00 UTC (02:00 EDT -> 01:00 EST).
* Asia/Singapore: UTC+8 all year.
* Calendar: 2026-03-01 is a Sunday, 2026-04-01 a Wednesday, 2026-05-01 a Friday,
  2027-01-01 a Friday; 2028 is the next leap year.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobs_service.core.errors import JobsError
from jobs_service.core.timing import (
    CronTiming,
    IntervalTiming,
    InvalidScheduleError,
    OnceTiming,
    Timing,
    upcoming,
    validate_timezone,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
PLUS_EIGHT = timezone(timedelta(hours=8))


def utc(year: int, month: int, day: int, *clock: int) -> datetime:
    """Build a literal UTC instant; `clock` is hour, minute, second."""
    hour, minute, second = (*clock, 0, 0, 0)[:3]
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def cron(expression: str, zone: str, after: datetime, count: int) -> list[datetime]:
    return upcoming(CronTiming(expression, zone), after, count)


# ------------------------------------------------------------------ Berlin spring forward


def test_fixed_hour_job_in_spring_gap_fires_once_at_the_transition() -> None:
    """02:30 does not exist on 2026-03-29 in Berlin, so the job runs at 03:00 CEST instead."""
    assert cron("30 2 * * *", BERLIN, utc(2026, 3, 28), 3) == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # the transition, 03:00 CEST
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_several_missing_matches_collapse_into_one_fire() -> None:
    """The four nonexistent matches 02:00-02:45 of ``*/15 2 * * *`` become one fire."""
    assert cron("*/15 2 * * *", BERLIN, utc(2026, 3, 29), 5) == [
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 0),
        utc(2026, 3, 30, 0, 15),
        utc(2026, 3, 30, 0, 30),
        utc(2026, 3, 30, 0, 45),
    ]


def test_transition_fire_is_not_repeated_when_asked_again_from_it() -> None:
    """Asking from the transition instant itself moves on to the next day."""
    timing = CronTiming("*/15 2 * * *", BERLIN)
    assert timing.next_after(utc(2026, 3, 29, 0, 59, 59)) == utc(2026, 3, 29, 1, 0)
    assert timing.next_after(utc(2026, 3, 29, 1, 0)) == utc(2026, 3, 30, 0, 0)


def test_wildcard_hour_job_skips_the_spring_gap() -> None:
    """``*/30 * * * *`` has no 02:00 or 02:30 on the day the clock jumps, and no catch-up."""
    assert cron("*/30 * * * *", BERLIN, utc(2026, 3, 29, 0, 15), 4) == [
        utc(2026, 3, 29, 0, 30),  # 01:30 CET
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST
        utc(2026, 3, 29, 1, 30),  # 03:30 CEST
        utc(2026, 3, 29, 2, 0),  # 04:00 CEST
    ]


def test_daily_job_moves_from_winter_to_summer_utc() -> None:
    """09:00 Berlin is 08:00 UTC before the spring change and 07:00 UTC after it."""
    assert cron("0 9 * * *", BERLIN, utc(2026, 3, 27, 12), 3) == [
        utc(2026, 3, 28, 8, 0),
        utc(2026, 3, 29, 7, 0),
        utc(2026, 3, 30, 7, 0),
    ]


# ---------------------------------------------------------------------- Berlin fall back


def test_fixed_hour_job_in_repeated_hour_fires_once_at_first_occurrence() -> None:
    """02:30 happens twice on 2026-10-25 in Berlin; the job runs only in the CEST pass."""
    assert cron("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST
        utc(2026, 10, 26, 1, 30),  # 02:30 CET, the next day
    ]


def test_fixed_hour_job_is_not_repeated_when_asked_from_the_second_pass() -> None:
    """From 02:10 CET (second pass) the next fire of ``30 2 * * *`` is the next day."""
    timing = CronTiming("30 2 * * *", BERLIN)
    assert timing.next_after(utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 26, 1, 30)


def test_wildcard_hour_job_fires_in_both_passes_of_the_repeated_hour() -> None:
    """``*/30 * * * *`` runs at 02:00 and 02:30 in CEST and again in CET."""
    assert cron("*/30 * * * *", BERLIN, utc(2026, 10, 24, 23, 45), 6) == [
        utc(2026, 10, 25, 0, 0),  # 02:00 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 1, 0),  # 02:00 CET
        utc(2026, 10, 25, 1, 30),  # 02:30 CET
        utc(2026, 10, 25, 2, 0),  # 03:00 CET
        utc(2026, 10, 25, 2, 30),  # 03:30 CET
    ]


def test_wildcard_hour_job_finds_the_second_pass_from_inside_the_first() -> None:
    """From 02:40 CEST, the next ``*/30`` fire is 02:00 CET, twenty minutes later."""
    timing = CronTiming("*/30 * * * *", BERLIN)
    assert timing.next_after(utc(2026, 10, 25, 0, 40)) == utc(2026, 10, 25, 1, 0)
    assert timing.next_after(utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 25, 1, 30)


def test_daily_job_moves_from_summer_to_winter_utc() -> None:
    """09:00 Berlin is 07:00 UTC before the autumn change and 08:00 UTC after it."""
    assert cron("0 9 * * *", BERLIN, utc(2026, 10, 23, 12), 3) == [
        utc(2026, 10, 24, 7, 0),
        utc(2026, 10, 25, 8, 0),
        utc(2026, 10, 26, 8, 0),
    ]


# ----------------------------------------------------------------------- other zones


def test_new_york_spring_gap_fires_at_its_own_transition() -> None:
    """02:30 is missing in New York on 2026-03-08, so the job runs at 03:00 EDT (07:00 UTC)."""
    assert cron("30 2 * * *", NEW_YORK, utc(2026, 3, 7), 3) == [
        utc(2026, 3, 7, 7, 30),  # 02:30 EST
        utc(2026, 3, 8, 7, 0),  # the transition, 03:00 EDT
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT
    ]


def test_new_york_repeated_hour_fires_once() -> None:
    """01:30 happens twice in New York on 2026-11-01; the job runs only in the EDT pass."""
    assert cron("30 1 * * *", NEW_YORK, utc(2026, 10, 31), 3) == [
        utc(2026, 10, 31, 5, 30),  # 01:30 EDT
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT, first of the two
        utc(2026, 11, 2, 6, 30),  # 01:30 EST
    ]


def test_singapore_weekly_job_ignores_other_zones_dst() -> None:
    """Monday 09:00 in Singapore is always Monday 01:00 UTC, through March's changes."""
    assert cron("0 9 * * 1", "Asia/Singapore", utc(2026, 3, 1), 5) == [
        utc(2026, 3, 2, 1, 0),
        utc(2026, 3, 9, 1, 0),
        utc(2026, 3, 16, 1, 0),
        utc(2026, 3, 23, 1, 0),
        utc(2026, 3, 30, 1, 0),
    ]


def test_default_zone_is_utc_and_results_are_aware_utc() -> None:
    """Without a zone the expression reads UTC, and every fire carries datetime.UTC."""
    timing = CronTiming("0 9 * * *")
    assert timing.timezone == "UTC"
    fire = timing.next_after(datetime(2026, 3, 1, 12, 0, tzinfo=PLUS_EIGHT))
    assert fire == utc(2026, 3, 1, 9, 0)
    assert fire is not None
    assert fire.tzinfo is UTC


# --------------------------------------------------------------------- cron calendar


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    """``0 0 13 * 5`` runs on every Friday and on every 13th (Vixie cron's OR rule)."""
    assert cron("0 0 13 * 5", "UTC", utc(2026, 4, 1), 5) == [
        utc(2026, 4, 3),  # Friday
        utc(2026, 4, 10),  # Friday
        utc(2026, 4, 13),  # Monday the 13th
        utc(2026, 4, 17),  # Friday
        utc(2026, 4, 24),  # Friday
    ]


def test_star_step_day_field_combines_with_and() -> None:
    """As in Vixie cron, a day field starting with ``*`` is not a restriction for the OR rule."""
    # Days 1, 11, 21, 31 that are also Mondays: none in April 2026, then Monday 11 May.
    assert cron("0 0 */10 * 1", "UTC", utc(2026, 4, 1), 2) == [utc(2026, 5, 11), utc(2026, 6, 1)]


def test_month_and_day_names_are_case_insensitive() -> None:
    """``JAN-MAR MON-FRI`` skips weekends and April to December."""
    expected = [utc(2026, 3, 30, 9), utc(2026, 3, 31, 9), utc(2027, 1, 1, 9), utc(2027, 1, 4, 9)]
    assert cron("0 9 * JAN-MAR MON-FRI", "UTC", utc(2026, 3, 27, 10), 4) == expected
    assert cron("0 9 * jan-Mar mon-fri", "UTC", utc(2026, 3, 27, 10), 4) == expected


def test_seven_is_sunday_like_zero() -> None:
    """Weekday 7 and weekday 0 both mean Sunday, alone and at the end of a range."""
    after = utc(2026, 3, 2)
    assert cron("0 12 * * 7", "UTC", after, 1) == [utc(2026, 3, 8, 12)]
    assert cron("0 12 * * 0", "UTC", after, 1) == [utc(2026, 3, 8, 12)]
    assert cron("0 12 * * 5-7", "UTC", after, 3) == [
        utc(2026, 3, 6, 12),
        utc(2026, 3, 7, 12),
        utc(2026, 3, 8, 12),
    ]


def test_steps_lists_and_ranges() -> None:
    """``*/n``, ``a-b/n``, ``a-b`` and lists expand the way crontab(5) describes."""
    assert cron("10-50/20 8 * * *", "UTC", utc(2026, 1, 1), 4) == [
        utc(2026, 1, 1, 8, 10),
        utc(2026, 1, 1, 8, 30),
        utc(2026, 1, 1, 8, 50),
        utc(2026, 1, 2, 8, 10),
    ]
    assert cron("0 */6 * * *", "UTC", utc(2026, 1, 1), 4) == [
        utc(2026, 1, 1, 6),
        utc(2026, 1, 1, 12),
        utc(2026, 1, 1, 18),
        utc(2026, 1, 2, 0),
    ]
    assert cron("5,7 1-2 * * *", "UTC", utc(2026, 1, 1), 5) == [
        utc(2026, 1, 1, 1, 5),
        utc(2026, 1, 1, 1, 7),
        utc(2026, 1, 1, 2, 5),
        utc(2026, 1, 1, 2, 7),
        utc(2026, 1, 2, 1, 5),
    ]


def test_leap_day_job_finds_the_next_leap_year() -> None:
    """``0 0 29 2 *`` from 2026 next runs on 2028-02-29, then 2032-02-29."""
    assert cron("0 0 29 2 *", "UTC", utc(2026, 1, 1), 2) == [utc(2028, 2, 29), utc(2032, 2, 29)]


def test_thirty_first_skips_short_months() -> None:
    """``0 0 31 * *`` runs only in months that have a 31st."""
    assert cron("0 0 31 * *", "UTC", utc(2026, 1, 31), 5) == [
        utc(2026, 3, 31),
        utc(2026, 5, 31),
        utc(2026, 7, 31),
        utc(2026, 8, 31),
        utc(2026, 10, 31),
    ]


def test_cron_next_after_is_strictly_after() -> None:
    """A fire exactly at the moment asked about is not returned; one second earlier it is."""
    timing = CronTiming("0 9 * * *")
    assert timing.next_after(utc(2026, 1, 1, 9)) == utc(2026, 1, 2, 9)
    assert timing.next_after(utc(2026, 1, 1, 8, 59, 59)) == utc(2026, 1, 1, 9)


def test_cron_runs_out_at_the_end_of_the_calendar() -> None:
    """Past the last representable fire there is nothing more, rather than an error."""
    assert CronTiming("0 0 29 2 *").next_after(utc(9999, 1, 1)) is None
    assert upcoming(CronTiming("0 0 1 1 *"), utc(9998, 6, 1), 5) == [utc(9999, 1, 1)]


def test_cron_expression_and_timezone_are_exposed() -> None:
    """The normalised expression and the zone name are kept for display and storage."""
    timing = CronTiming("  0   9 * *  1-5 ", BERLIN)
    assert timing.expression == "0 9 * * 1-5"
    assert timing.timezone == BERLIN
    assert repr(timing) == "CronTiming('0 9 * * 1-5', timezone='Europe/Berlin')"
    assert str(timing) == "cron '0 9 * * 1-5' (Europe/Berlin)"
    assert timing == CronTiming("0 9 * * 1-5", BERLIN)
    assert timing != CronTiming("0 9 * * 1-5")


# -------------------------------------------------------------------- cron validation


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * *", "cron '* * *': expected 5 fields (minute hour day month weekday), got 3"),
        (
            "0 * * * * *",
            "cron '0 * * * * *': expected 5 fields (minute hour day month weekday), got 6"
            " (seconds and year fields are not supported)",
        ),
        ("", "cron '': expected 5 fields (minute hour day month weekday), got 0"),
        ("61 * * * *", "cron '61 * * * *': minute 61 is out of range 0-59"),
        ("0 25 * * *", "cron '0 25 * * *': hour 25 is out of range 0-23"),
        ("0 0 0 * *", "cron '0 0 0 * *': day 0 is out of range 1-31"),
        ("0 0 * 13 *", "cron '0 0 * 13 *': month 13 is out of range 1-12"),
        ("0 0 * * 8", "cron '0 0 * * 8': weekday 8 is out of range 0-7 (0 and 7 are Sunday)"),
        ("*/0 * * * *", "cron '*/0 * * * *': minute step in '*/0' must be a number from 1 to 59"),
        ("0 */x * * *", "cron '0 */x * * *': hour step in '*/x' must be a number from 1 to 23"),
        ("abc * * * *", "cron 'abc * * * *': minute 'abc' is not a number"),
        ("1.5 * * * *", "cron '1.5 * * * *': minute '1.5' is not a number, range, list or step"),
        (
            "0 0 * FOO *",
            "cron '0 0 * FOO *': month 'FOO' is not a number or a month name (JAN-DEC)",
        ),
        (
            "0 0 * * MONDAY",
            "cron '0 0 * * MONDAY': weekday 'MONDAY' is not a number or a weekday name (SUN-SAT)",
        ),
        ("1,,2 * * * *", "cron '1,,2 * * * *': minute '1,,2' has an empty list item"),
        (
            "0 22-2 * * *",
            "cron '0 22-2 * * *': hour range '22-2' runs backwards (split it, e.g. '22-23,0-2')",
        ),
        (
            "5/15 * * * *",
            "cron '5/15 * * * *': minute step '5/15' needs a range, e.g. '5-59/15'",
        ),
        (
            "@hourly",
            "cron '@hourly': macros such as @hourly are not supported,"
            " write the 5 fields instead (e.g. '0 * * * *')",
        ),
        ("0 0 30 2 *", "cron '0 0 30 2 *': never fires, no month in the month field has day 30"),
    ],
)
def test_invalid_cron_expressions_are_explained(expression: str, message: str) -> None:
    """Each mistake gets a one-line message naming the field and what is wrong with it."""
    with pytest.raises(InvalidScheduleError) as caught:
        CronTiming(expression)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("expression", "token", "field"),
    [
        ("0 0 L * *", "L", "day"),
        ("0 0 15W * *", "15W", "day"),
        ("0 0 LW * *", "LW", "day"),
        ("0 0 * * 5L", "5L", "weekday"),
        ("0 0 * * 5#2", "5#2", "weekday"),
        ("0 0 ? * *", "?", "day"),
    ],
)
def test_croniter_and_quartz_extensions_are_refused(
    expression: str, token: str, field: str
) -> None:
    """``L``, ``W``, ``#`` and ``?`` are named as unsupported extensions, not typos."""
    with pytest.raises(InvalidScheduleError) as caught:
        CronTiming(expression)
    assert str(caught.value) == (
        f"cron {expression!r}: {field} {token!r} uses a non-standard extension"
        " (L, W, # and ? are not supported)"
    )


def test_names_containing_l_and_w_are_not_mistaken_for_extensions() -> None:
    """JUL and WED are ordinary names even though they contain L and W."""
    assert cron("0 0 * JUL WED", "UTC", utc(2026, 7, 1), 1) == [utc(2026, 7, 8)]


def test_schedule_errors_are_jobs_errors_and_value_errors() -> None:
    """Callers can catch them as the service's errors or as plain bad values."""
    with pytest.raises(JobsError):
        CronTiming("nope")
    with pytest.raises(ValueError, match="expected 5 fields"):
        CronTiming("nope")


# ----------------------------------------------------------------------- time zones


def test_unknown_timezone_is_explained() -> None:
    """A zone name that zoneinfo does not know gets a hint to use an IANA name."""
    expected = "unknown timezone 'Mars/Base' (use an IANA name such as Europe/Berlin)"
    with pytest.raises(InvalidScheduleError) as caught:
        validate_timezone("Mars/Base")
    assert str(caught.value) == expected
    with pytest.raises(InvalidScheduleError) as caught:
        CronTiming("0 9 * * *", "Mars/Base")
    assert str(caught.value) == expected


@pytest.mark.parametrize("name", ["", "Europe", "../etc/passwd", "/etc/localtime", "Europe/"])
def test_malformed_timezone_names_are_unknown_timezones(name: str) -> None:
    """Paths, directories and empty names all become the same operator message."""
    with pytest.raises(InvalidScheduleError, match="unknown timezone"):
        validate_timezone(name)


def test_known_timezone_resolves() -> None:
    """An IANA name comes back as the zone object."""
    assert validate_timezone(BERLIN).key == BERLIN


# ------------------------------------------------------------------------- intervals


def test_interval_fires_on_the_grid_strictly_after_the_moment() -> None:
    """Fires are anchor + k * seconds for k >= 1; a moment on the grid is not returned."""
    timing = IntervalTiming(90, utc(2026, 1, 1))
    assert timing.next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 1, 30)
    assert timing.next_after(utc(2026, 1, 1, 0, 1, 30)) == utc(2026, 1, 1, 0, 3, 0)
    assert timing.next_after(utc(2026, 1, 1, 0, 1, 29)) == utc(2026, 1, 1, 0, 1, 30)
    assert timing.next_after(utc(2026, 1, 2, 0, 0, 1)) == utc(2026, 1, 2, 0, 1, 30)


def test_interval_before_the_anchor_waits_one_interval_after_it() -> None:
    """The anchor itself is not a fire: the first one is a whole interval later."""
    timing = IntervalTiming(3600, utc(2026, 1, 1, 12))
    assert timing.next_after(utc(2025, 6, 1)) == utc(2026, 1, 1, 13)


def test_interval_anchor_is_truncated_to_whole_seconds_and_kept_in_utc() -> None:
    """Sub-second anchors and other offsets still give whole-second UTC fires."""
    anchor = datetime(2026, 1, 1, 8, 0, 0, 750_000, tzinfo=PLUS_EIGHT)
    timing = IntervalTiming(60, anchor)
    assert timing.anchor == utc(2026, 1, 1)
    assert timing.anchor.tzinfo is UTC
    assert upcoming(timing, utc(2026, 1, 1, 0, 0, 30), 3) == [
        utc(2026, 1, 1, 0, 1),
        utc(2026, 1, 1, 0, 2),
        utc(2026, 1, 1, 0, 3),
    ]


def test_interval_is_unaffected_by_dst() -> None:
    """An interval counts real seconds, so six hours across a DST change stay six hours."""
    anchor = datetime.fromisoformat("2026-03-28T21:00:00+01:00")
    timing = IntervalTiming(6 * 3600, anchor)
    assert upcoming(timing, anchor, 2) == [utc(2026, 3, 29, 2), utc(2026, 3, 29, 8)]


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        (0, "interval must be at least 1 second, got 0"),
        (-5, "interval must be at least 1 second, got -5"),
        (1.5, "interval must be a whole number of seconds, got 1.5"),
        (True, "interval must be a whole number of seconds, got True"),
    ],
)
def test_invalid_interval_is_explained(seconds: int, message: str) -> None:
    """Zero, negative and non-integer intervals are refused with the value shown."""
    with pytest.raises(InvalidScheduleError) as caught:
        IntervalTiming(seconds, utc(2026, 1, 1))
    assert str(caught.value) == message


# -------------------------------------------------------------------------- one-offs


def test_once_fires_while_ahead_then_never() -> None:
    """A one-off returns its instant (in UTC) until that instant is reached."""
    timing = OnceTiming(datetime.fromisoformat("2026-03-01T09:00:00+08:00"))
    assert timing.at == utc(2026, 3, 1, 1)
    assert timing.next_after(utc(2026, 3, 1, 0, 59)) == utc(2026, 3, 1, 1)
    assert timing.next_after(utc(2026, 3, 1, 1)) is None
    assert upcoming(timing, utc(2026, 1, 1), 5) == [utc(2026, 3, 1, 1)]


def test_once_is_past_from_its_instant_on() -> None:
    """is_past is false before the instant and true at and after it."""
    timing = OnceTiming(utc(2026, 3, 1, 1))
    assert not timing.is_past(utc(2026, 3, 1, 0, 59, 59))
    assert timing.is_past(utc(2026, 3, 1, 1))
    assert timing.is_past(utc(2026, 3, 2))


# -------------------------------------------------------------------- naive datetimes


def test_naive_constructor_arguments_are_schedule_errors() -> None:
    """A naive 'at' or 'anchor' is configuration to fix, with an example of the format."""
    naive = datetime(2026, 3, 1, 9)  # noqa: DTZ001 - the point of the test
    with pytest.raises(InvalidScheduleError) as caught:
        OnceTiming(naive)
    assert str(caught.value) == "'at' needs a UTC offset, e.g. 2026-03-01T09:00:00+08:00"
    with pytest.raises(InvalidScheduleError) as caught:
        IntervalTiming(60, naive)
    assert str(caught.value) == "'anchor' needs a UTC offset, e.g. 2026-03-01T09:00:00+08:00"


@pytest.mark.parametrize(
    "timing",
    [CronTiming("* * * * *"), IntervalTiming(60, utc(2026, 1, 1)), OnceTiming(utc(2026, 1, 1))],
)
def test_naive_moments_are_refused(timing: Timing) -> None:
    """Asking about a naive moment is a caller bug and raises ValueError, not a guess."""
    naive = datetime(2026, 3, 1, 9)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="aware datetime"):
        timing.next_after(naive)
    with pytest.raises(ValueError, match="aware datetime"):
        upcoming(timing, naive, 0)


# ------------------------------------------------------------------------- upcoming


def test_upcoming_returns_exactly_count_fires_in_order() -> None:
    """count=5 gives five strictly increasing fires; count=0 gives none."""
    fires = upcoming(CronTiming("*/15 * * * *"), utc(2026, 1, 1, 0, 7), 5)
    assert fires == [
        utc(2026, 1, 1, 0, 15),
        utc(2026, 1, 1, 0, 30),
        utc(2026, 1, 1, 0, 45),
        utc(2026, 1, 1, 1, 0),
        utc(2026, 1, 1, 1, 15),
    ]
    assert upcoming(CronTiming("*/15 * * * *"), utc(2026, 1, 1), 0) == []


def test_upcoming_refuses_a_negative_count() -> None:
    """A negative count is a caller bug."""
    with pytest.raises(ValueError, match="count must not be negative"):
        upcoming(CronTiming("* * * * *"), utc(2026, 1, 1), -1)
