"""The health-probe agent reports each dependency separately."""

from __future__ import annotations

import pytest

from jobs_service.agents.system_health import ServiceHealthProbe
from jobs_service.broker import broker
from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure.database import Database
from tests.support.processes import free_port

pytestmark = pytest.mark.anyio


async def test_a_down_database_is_a_failed_check_not_an_exception(pg_url: str) -> None:
    """A refused database connection is reported; the broker check still passes."""
    down = Database(
        f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/jobs",
        DatabaseSettings(connect_timeout_s=1),
    )
    up = Database(pg_url, DatabaseSettings())
    try:
        failed = {r.name: r for r in await ServiceHealthProbe(down, broker).check_all()}
        healthy = {r.name: r.ok for r in await ServiceHealthProbe(up, broker).check_all()}
    finally:
        await down.close()
        await up.close()
    assert failed["database"].ok is False
    assert failed["database"].detail.startswith(("ConnectionRefusedError", "OSError"))
    assert failed["broker"].ok is True
    assert healthy == {"database": True, "broker": True}
