"""Run ids and pagination cursors."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from jobs_service.core.ids import is_run_id, new_run_id, process_name, random_bytes
from jobs_service.core.pagination import InvalidCursorError, decode_cursor, encode_cursor


def test_run_ids_are_uuid7_and_time_ordered() -> None:
    """Version 7, RFC variant, and later ids sort after earlier ones."""
    ids = [new_run_id() for _ in range(200)]
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert all(is_run_id(value) for value in ids)
    assert len(set(ids)) == 200
    prefixes = [value[:12] for value in ids]  # the 48-bit millisecond timestamp
    assert prefixes == sorted(prefixes)


def test_random_bytes_never_repeat_across_refills_or_threads() -> None:
    """Many draws spanning several refills of the buffer, from four threads at once:
    no two draws are equal, and each has the length asked for."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    with ThreadPoolExecutor(4) as pool:
        draws = [
            b
            for chunk in pool.map(lambda _: [random_bytes(16) for _ in range(2000)], range(4))
            for b in chunk
        ]
    assert len(draws) == 8000
    assert {len(b) for b in draws} == {16}
    assert len(set(draws)) == 8000
    assert len(random_bytes(10_000)) == 10_000  # more than one refill holds


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_does_not_reuse_the_parents_random_bytes() -> None:
    """The parent draws (so its buffer holds unread bytes), forks, and both draw the
    next bytes: a child copying the buffer would hand out the parent's next bytes."""
    random_bytes(16)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next draw and leave at once
        os.write(write_end, random_bytes(16))
        os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 16)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert child != random_bytes(16)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_process_name_is_unique_even_where_host_and_pid_repeat() -> None:
    """``host:pid:<random>``, stable within a process; a forked child gets its own. The
    random part tells a container restarted in place (same hostname, PID 1 again) from
    the process that died there."""
    name = process_name()
    host, pid, token = name.rsplit(":", 2)
    assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    assert len(token) == 8
    assert int(token, 16) >= 0
    assert process_name() == name
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(write_end, process_name().encode())
        os._exit(0)
    os.close(write_end)
    child_name = os.read(read_end, 200).decode()
    os.close(read_end)
    os.waitpid(child, 0)
    assert child_name.startswith(f"{socket.gethostname()}:{child}:")
    assert child_name != name


def test_numeric_ids_are_not_run_ids() -> None:
    """Row ids and run ids cannot be confused."""
    assert not is_run_id("12345")
    assert not is_run_id("Z" * 32)


def test_cursor_round_trip_and_garbage() -> None:
    """A cursor decodes to the id it encodes; anything else is refused."""
    assert decode_cursor(encode_cursor(987654321)) == 987654321
    for bad in ("", "abc", encode_cursor(5)[:-2] + "!!", "YzE6eHl6"):
        with pytest.raises(InvalidCursorError):
            decode_cursor(bad)
