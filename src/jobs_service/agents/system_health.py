"""Checks of the service's own dependencies as an agent."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from jobs_service.infrastructure.health import check_broker, check_database

if TYPE_CHECKING:
    from taskiq import AsyncBroker

    from jobs_service.core.ports import CheckResult
    from jobs_service.infrastructure.database import Database

__all__ = ["ServiceHealthProbe"]


class ServiceHealthProbe:
    """:class:`~jobs_service.core.ports.HealthProbe` for the database and the broker."""

    def __init__(self, database: Database, broker: AsyncBroker) -> None:
        self._database = database
        self._broker = broker

    async def check_all(self) -> list[CheckResult]:
        """Both checks, concurrently."""
        return list(
            await asyncio.gather(check_database(self._database), check_broker(self._broker))
        )
