"""structlog configuration: JSON lines in production, readable lines on a terminal.

Every line has an ``event``. Standard-library loggers (uvicorn, TaskIQ, SQLAlchemy) are
routed through the same processors, so a log shipper sees one format. The JSON path uses
orjson and a bytes logger because lifecycle lines sit on the task hot path.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Literal

import orjson
import structlog

if TYPE_CHECKING:
    from structlog.typing import Processor

__all__ = ["configure_logging", "get_logger"]

_OURS = "_jobs_service_handler"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _StderrBytes:
    """Writes to whatever ``sys.stderr`` is now (test capture, a redirected stream),
    not the stream that was current when a logger was first cached."""

    def write(self, data: bytes) -> None:
        sys.stderr.buffer.write(data)

    def flush(self) -> None:
        sys.stderr.flush()


def _orjson_dumps(value: Any, **_: Any) -> bytes:
    return orjson.dumps(value, default=str)


def configure_logging(
    log_format: Literal["auto", "json", "console"] = "auto",
    level: Literal["debug", "info", "warning", "error"] = "info",
) -> None:
    """Configure structlog and the standard library's root logger, idempotently."""
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    numeric_level = _LEVELS[level]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        shared.append(structlog.processors.format_exc_info)
        renderer: Processor = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        logger_factory: Any = structlog.BytesLoggerFactory(_StderrBytes())  # type: ignore[arg-type]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
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
    handler = logging.StreamHandler(sys.stderr)
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


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    """Return a lazy structlog logger; ``name`` is bound as ``component``.

    Lazy matters: module-level loggers are created at import, before the entry point
    configures logging, and must pick up that configuration on first use.
    """
    logger: structlog.typing.FilteringBoundLogger = (
        structlog.get_logger(component=name) if name else structlog.get_logger()
    )
    return logger
