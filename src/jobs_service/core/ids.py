"""Run identifiers, and the random bytes that ids are made of.

Run ids are UUIDv7 (RFC 9562) in hex: time-ordered, so the ``job_runs`` index grows at
its right edge instead of splitting random pages, and a run id sorts by creation time.

Random bits come from the operating system's generator (``os.urandom``), read a few
kilobytes at a time: one ``getrandom`` call per id cost the gateway 5-10 µs per webhook
under load (a system call each, twice per request with the request id), a read from the
buffer well under one. A forked child starts with an empty buffer, so two processes
never hand out the same bytes.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time

__all__ = ["RUN_ID_PATTERN", "is_run_id", "new_run_id", "process_name", "random_bytes"]

RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")

_REFILL = 4096
_buffer = b""
_offset = 0
_lock = threading.Lock()


def random_bytes(count: int) -> bytes:
    """``count`` bytes from the operating system's cryptographic generator."""
    global _buffer, _offset
    with _lock:
        if _offset + count > len(_buffer):
            _buffer, _offset = os.urandom(max(_REFILL, count)), 0
        start, _offset = _offset, _offset + count
        return _buffer[start:_offset]


_process_names: dict[int, str] = {}  # by pid: a forked child makes its own


def process_name() -> str:
    """``host:pid:<8 hex>``, this process's name in run records, heartbeats, consumer
    groups and scheduler claims.

    The random part is what makes it unique: a container restarted in place keeps its
    hostname and, as PID 1, its pid, and would otherwise pass for the process that died
    (whose runs left ``running`` would then never be recovered).
    """
    pid = os.getpid()
    name = _process_names.get(pid)
    if name is None:
        name = _process_names[pid] = f"{socket.gethostname()}:{pid}:{random_bytes(4).hex()}"
    return name


def _forget_in_child() -> None:
    global _buffer, _offset, _lock
    _buffer, _offset, _lock = b"", 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def new_run_id() -> str:
    """Return a new UUIDv7 as 32 lowercase hex digits."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(random_bytes(10), "big")
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= (rand >> 68) << 64  # 12 random bits
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)
    return f"{value:032x}"


def is_run_id(value: str) -> bool:
    """Tell a run id (32 hex digits) from a numeric row id."""
    return RUN_ID_PATTERN.fullmatch(value) is not None
