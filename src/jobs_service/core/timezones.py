"""The time zones a schedule may name: the same set on every host.

``ZoneInfo`` loads whatever the host's tz database holds, and hosts differ: one has
``localtime`` (the host's own zone), ``posix/…`` and ``right/…`` copies, ``Factory`` or
``posixrules``; an older one lacks a zone added since. A schedule stored by a gateway on
one host is read by schedulers on others, so a zone must mean the same thing on all of
them. The set offered is the one the ``tzdata`` package ships (a dependency, so every
host has the same version of it, and ``ZoneInfo`` falls back to it for a zone the host
lacks), less the names that are not places. That makes the names uniform; the rules
are uniform only where the host's database is out of the way (``PYTHONTZPATH=""``, as
the image sets it), since ``ZoneInfo`` reads a host's own file first.
"""

from __future__ import annotations

import functools
from importlib import resources
from zoneinfo import available_timezones

from jobs_service.core.timing import InvalidScheduleError

__all__ = ["portable_timezones", "require_portable_timezone"]

#: Names in tz databases that are not a place: the host's zone, a placeholder, a rule.
_NOT_PLACES = frozenset({"localtime", "Factory", "posixrules"})
#: Copies of the database kept by some hosts (POSIX seconds, leap seconds).
_HOST_VARIANTS = ("posix/", "right/")
_HINT = "use an IANA name such as Europe/Berlin"


@functools.cache
def portable_timezones() -> frozenset[str]:
    """The zone names a schedule may use (read once per process)."""
    return frozenset(
        name
        for name in _shipped_zones()
        if name not in _NOT_PLACES and not name.startswith(_HOST_VARIANTS)
    )


def _shipped_zones() -> set[str]:
    """The ``tzdata`` package's list; the host's own only if the package is missing."""
    try:
        listing = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover - it is a dependency
        return available_timezones()
    return {line.strip() for line in listing.splitlines() if line.strip()}


def require_portable_timezone(name: object) -> str:
    """``name`` if every host reads it as the same zone, else an
    :class:`~jobs_service.core.timing.InvalidScheduleError` saying why: the same answer
    on every host, whatever its own tz database holds."""
    if not isinstance(name, str):  # configuration arrives from JSON and TOML
        msg = f"timezone must be an IANA name such as Europe/Berlin, got {type(name).__name__}"
        raise InvalidScheduleError(msg)
    zones = portable_timezones()
    if name in zones:
        return name
    copy_of, _, place = name.partition("/")
    if f"{copy_of}/" in _HOST_VARIANTS and place in zones:
        msg = f"timezone {name!r} is a host-specific copy of a zone; use {place!r}"
    elif name in _NOT_PLACES:
        msg = f"timezone {name!r} is not a place and differs between hosts ({_HINT})"
    else:
        msg = f"unknown timezone {name!r} ({_HINT})"
    raise InvalidScheduleError(msg)
