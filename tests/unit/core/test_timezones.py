"""The zones a schedule may name are the same on every host, and only places."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from jobs_service.core.timezones import portable_timezones, require_portable_timezone
from jobs_service.core.timing import InvalidScheduleError


def test_the_portable_set_is_the_places_of_the_tzdata_package() -> None:
    """Every zone offered loads here, and none is a host's own name or copy of a zone."""
    zones = portable_timezones()
    assert {"UTC", "Europe/Berlin", "Asia/Singapore", "America/Argentina/Buenos_Aires"} <= zones
    assert not {"localtime", "Factory", "posixrules"} & zones
    assert not [zone for zone in zones if zone.startswith(("posix/", "right/"))]
    assert all(ZoneInfo(zone).key == zone for zone in zones)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("localtime", "timezone 'localtime' is not a place and differs between hosts"),
        ("Factory", "timezone 'Factory' is not a place"),
        ("posixrules", "timezone 'posixrules' is not a place"),
        ("posix/Europe/Berlin", "a host-specific copy of a zone; use 'Europe/Berlin'"),
        ("right/UTC", "a host-specific copy of a zone; use 'UTC'"),
        ("Mars/Olympus", "unknown timezone 'Mars/Olympus'"),
    ],
)
def test_a_zone_not_every_host_reads_alike_is_refused_saying_why(name: str, message: str) -> None:
    """The refusal names the zone and, for a copy, the zone to use instead; the answer
    does not depend on what this host's tz database happens to hold."""
    with pytest.raises(InvalidScheduleError, match=message):
        require_portable_timezone(name)


def test_a_zone_that_is_not_text_is_refused() -> None:
    """Label values come from code and TOML, so a number gets a message, not a crash."""
    with pytest.raises(InvalidScheduleError, match="IANA name such as Europe/Berlin, got int"):
        require_portable_timezone(8)
