"""A private redis-server a test can stop and start (never the machine's shared one)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import redis

from tests.support.processes import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["PrivateRedis"]


class PrivateRedis:
    """``redis-server`` on a free loopback port, in a directory of the test's."""

    def __init__(self, directory: Path, *, durable: bool = False) -> None:
        self.durable = durable  # AOF with fsync on every write, as production should run
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:  # pragma: no cover - the machine image has it
            msg = "redis-server is not installed"
            raise RuntimeError(msg)
        self._process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.durable else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self._directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        msg = "private redis-server did not start"
        raise RuntimeError(msg)

    @contextmanager
    def hung(self) -> Iterator[None]:
        """While inside, the server is frozen (SIGSTOP): connections stay open and
        nothing answers, as with a partition or a stalled host (no reset to react to).
        It runs on, with what it received meanwhile, when the block ends."""
        if self._process is None:
            msg = "the private redis-server is not running"
            raise RuntimeError(msg)
        os.kill(self._process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self._process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop it (unless durable, its data is gone: it keeps nothing on disk)."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None
