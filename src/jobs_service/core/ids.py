"""Run identifiers.

Run ids are UUIDv7 (RFC 9562) in hex: time-ordered, so the ``job_runs`` index grows at
its right edge instead of splitting random pages, and a run id sorts by creation time.
"""

from __future__ import annotations

import os
import re
import time

__all__ = ["RUN_ID_PATTERN", "is_run_id", "new_run_id"]

RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


def new_run_id() -> str:
    """Return a new UUIDv7 as 32 lowercase hex digits."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= (rand >> 68) << 64  # 12 random bits
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)
    return f"{value:032x}"


def is_run_id(value: str) -> bool:
    """Tell a run id (32 hex digits) from a numeric row id."""
    return RUN_ID_PATTERN.fullmatch(value) is not None
