"""Which processes run tasks on one embedded database file.

In the embedded mode the in-memory broker keeps a run's message in the process that
queued it, so the runs a stopped ``jobsctl run`` left unfinished will never finish and
the next one fails them (``Interrupted``). But ``jobsctl enqueue`` and ``jobsctl runs
retry`` run their task in their own process on the same file, and a ``jobsctl run``
starting meanwhile must leave that run alone.

Every process that runs tasks on the file holds a shared lock on ``<file>.lock`` for its
life. A starting ``jobsctl run`` that can take it exclusively knows no other one is
alive, and fails every unfinished run while it holds it (a process starting meanwhile
waits, before it queues anything). Otherwise it fails only runs whose worker process is
gone (:func:`process_gone`). The kernel drops a dead process's locks, so a crash never
leaves one behind. Where ``fcntl`` is missing (Windows), every run counts as left over,
as before.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import TYPE_CHECKING

from jobs_service.core.ids import process_name
from jobs_service.infrastructure.database import sqlite_path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from typing import IO

__all__ = ["EmbeddedLock", "process_gone"]


class EmbeddedLock:
    """The lock of one embedded database file, held by this process."""

    def __init__(self, database_url: str) -> None:
        path = sqlite_path(database_url)
        self._path = None if path is None or fcntl is None else path.with_name(path.name + ".lock")
        self._file: IO[bytes] | None = None

    def take_alone(self) -> bool:
        """Take the lock exclusively if no other process holds it; True if taken (call
        :meth:`share` when done with what needs it). Always True without a file."""
        if self._path is None:
            return True
        file = self._open()
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def share(self) -> None:
        """Hold the lock shared, as every process running tasks on the file does
        (waits while a starting ``jobsctl run`` holds it exclusively)."""
        if self._path is not None:
            fcntl.flock(self._open(), fcntl.LOCK_SH)

    async def aclose(self) -> None:
        """Let go of the lock (the runtime calls this when it stops)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def _open(self) -> IO[bytes]:
        if self._file is None:
            assert self._path is not None  # noqa: S101 - callers check
            self._file = self._path.open("ab")
        return self._file


def process_gone(worker: str) -> bool:
    """Whether the process named ``worker`` (``host:pid:<random>``, see
    :func:`process_name`) has ended, as far as this host can tell: a process of this
    host whose pid is not alive, or whose pid is this process's under another name (a
    container restarted in place). A name of another host counts as alive."""
    host, _, rest = worker.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return worker != process_name()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
