"""Helpers the commands share: importing the broker, running coroutines."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from jobs_service.cli.errors import CliError

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from taskiq import AsyncBroker

__all__ = ["run_async", "shared_broker"]

T = TypeVar("T")


def shared_broker() -> AsyncBroker:
    """Import the shared broker (and with it every task module), or fail in one line."""
    from jobs_service.core.errors import TaskModuleError  # noqa: PLC0415

    try:
        from jobs_service.broker import broker  # noqa: PLC0415
    except TaskModuleError as exc:
        raise CliError(str(exc)) from None
    return broker


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop where available."""
    try:
        import uvloop  # noqa: PLC0415

        return uvloop.run(coroutine)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coroutine)
