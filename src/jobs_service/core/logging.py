"""structlog configuration: JSON lines in production, readable lines on a terminal.

Every line has an ``event``. Standard-library loggers (uvicorn, TaskIQ, SQLAlchemy) are
routed through the same processors, so a log shipper sees one format. The JSON path uses
orjson and a bytes logger because lifecycle lines sit on the task hot path.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson
import structlog

if TYPE_CHECKING:
    from structlog.typing import Processor

__all__ = ["HotPathLogger", "configure_logging", "flush_logs", "get_logger"]

_OURS = "_jobs_service_handler"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _StderrBytes:
    """Log output, written to whatever ``sys.stderr`` is when it is written out (test
    capture, a redirected stream), one system call per event-loop turn.

    With stderr on a file or a pipe, a ``write()`` per line cost about 10 µs: twice per
    run, more than building the lines. Lines written while an event loop runs in this
    thread are collected and written together as the loop's next turn starts (or at
    once when 64 KiB wait); anywhere else (start-up, shutdown, task threads) a line is
    written at once, after whatever waits. So a process killed with SIGKILL loses at
    most the lines of its last turn, a fraction of a millisecond; the service's own
    exits call :func:`flush_logs` first.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        # The loop a write-out is scheduled on (a loop that stopped before running it
        # must not keep later lines waiting).
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._parts.append(data)
            self._size += len(data)
            if loop is None or self._size >= _MAX_BUFFERED:
                self._write_out()
                return
            if self._scheduled_on is loop:
                return
            self._scheduled_on = loop
        loop.call_soon(self.flush_now)

    def flush(self) -> None:
        """Called after every line (by structlog and logging): lines wait for the end of
        the turn instead; :meth:`flush_now` writes them."""

    def flush_now(self) -> None:
        """Write out everything waiting."""
        with self._lock:
            self._scheduled_on = None
            self._write_out()

    def _write_out(self) -> None:
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        with contextlib.suppress(ValueError, OSError):  # stderr closed: nowhere to write
            sys.stderr.buffer.write(data)
            sys.stderr.flush()


class _StderrText:
    """The standard library's handler writes text; it joins the same buffered output,
    so lines of both kinds stay in order."""

    def __init__(self, target: _StderrBytes) -> None:
        self._target = target

    def write(self, text: str) -> None:
        self._target.write(text.encode("utf-8", "backslashreplace"))

    def flush(self) -> None:
        """Lines are written per loop turn (see ``_StderrBytes``)."""


_MAX_BUFFERED = 65_536


def _orjson_dumps(value: Any, **_: Any) -> bytes:
    return orjson.dumps(value, default=str)


class _HotPath:
    """What :class:`HotPathLogger` needs to know of the configuration."""

    as_json = False
    level = logging.INFO
    second = -1
    second_text = ""


def _timestamp() -> str:
    """``datetime.now(UTC).isoformat()`` with a ``Z``, the date part formatted once a
    second (what structlog's ISO time stamper writes, at a fifth of the cost)."""
    now = time.time()
    second = int(now)
    if second != _HotPath.second:
        _HotPath.second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _HotPath.second = second
    return f"{_HotPath.second_text}.{int((now - second) * 1_000_000):06d}Z"


class HotPathLogger:
    """A logger for lines written for every run (``job-start``, ``job-success``).

    In JSON mode it writes the same line structlog would (bound context variables,
    ``component``, ``event``, ``level``, ``timestamp``) straight to stderr, skipping
    structlog's per-call processor chain; that chain cost as much per run as everything
    else the worker does for a no-op task. On a terminal it hands over to structlog.
    """

    __slots__ = ("_component", "_fallback")

    def __init__(self, component: str) -> None:
        self._component = component
        self._fallback = get_logger(component)

    def info(self, event: str, **fields: Any) -> None:
        """Log ``event`` at info level."""
        self._emit(logging.INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log ``event`` at warning level."""
        self._emit(logging.WARNING, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log ``event`` at error level."""
        self._emit(logging.ERROR, "error", event, fields)

    def _emit(self, level: int, name: str, event: str, fields: dict[str, Any]) -> None:
        if level < _HotPath.level:
            return
        if not _HotPath.as_json:
            self._fallback.log(level, event, **fields)
            return
        line = {"component": self._component, **fields, "event": event}
        line.update(structlog.contextvars.get_contextvars())
        line["level"] = name
        line["timestamp"] = _timestamp()
        _STDERR.write(orjson.dumps(line, default=str) + b"\n")


_STDERR = _StderrBytes()


def flush_logs() -> None:
    """Write out log lines still waiting for the end of an event-loop turn (call before a
    process exits by a path that skips ``atexit``, such as a forked worker's)."""
    _STDERR.flush_now()


atexit.register(flush_logs)


def configure_logging(
    log_format: Literal["auto", "json", "console"] = "auto",
    level: Literal["debug", "info", "warning", "error"] = "info",
) -> None:
    """Configure structlog and the standard library's root logger, idempotently."""
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    numeric_level = _LEVELS[level]
    _HotPath.as_json, _HotPath.level = as_json, numeric_level
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        shared.append(structlog.processors.format_exc_info)
        renderer: Processor = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        logger_factory: Any = structlog.BytesLoggerFactory(_STDERR)  # type: ignore[arg-type]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=_console_traceback()
        )
        logger_factory = structlog.PrintLoggerFactory(sys.stderr)

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )

    stdlib_renderer: Processor = (
        structlog.processors.JSONRenderer(
            serializer=lambda v, **_: orjson.dumps(v, default=str).decode()
        )
        if as_json
        else renderer
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, stdlib_renderer],
    )
    handler = logging.StreamHandler(_StderrText(_STDERR) if as_json else sys.stderr)
    handler.setFormatter(formatter)
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    # Replace only our own handler: others (a test runner's capture, an embedding
    # application's) stay, and TaskIQ's basicConfig handler would print a second,
    # unstructured copy of every line.
    root.handlers[:] = [
        h
        for h in root.handlers
        if not getattr(h, _OURS, False) and type(h) is not logging.StreamHandler
    ]
    root.addHandler(handler)
    root.setLevel(numeric_level)
    # Noisy at INFO and duplicated by our own lines: the request log and job-* events.
    for name in (
        "uvicorn.access",
        "taskiq.receiver.receiver",
        "taskiq.process-manager",
        "httpx",
        "httpcore",
        "alembic",
        "taskiq.cli.scheduler.run",
    ):
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error", "taskiq"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def _console_traceback() -> structlog.typing.ExceptionRenderer:
    """Tracebacks without local variables: structlog's default (rich, or
    better-exceptions) prints every frame's locals, and a frame of the request path
    holds the raw headers, a webhook's signature or an ``Authorization`` key among them,
    which the redaction of log fields never sees."""
    try:
        import rich  # noqa: F401, PLC0415 - only to learn whether it is installed
    except ImportError:
        return structlog.dev.plain_traceback
    return structlog.dev.RichTracebackFormatter(show_locals=False)


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    """Return a lazy structlog logger; ``name`` is bound as ``component``.

    Lazy matters: module-level loggers are created at import, before the entry point
    configures logging, and must pick up that configuration on first use.
    """
    logger: structlog.typing.FilteringBoundLogger = (
        structlog.get_logger(component=name) if name else structlog.get_logger()
    )
    return logger
