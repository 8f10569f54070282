"""Shared fixtures and the rules of the test tiers.

- ``tests/unit``: no network services (SQLite files in ``tmp_path`` are fine).
- ``tests/integration``: the real PostgreSQL and Redis.
- ``tests/e2e``: real ``jobsctl`` processes against them.

Without the services, integration and e2e tests are skipped with one summary line saying
how to provide them; under ``CI=true`` a missing service ends the run as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The test process must not pick up a developer's JOBS_* environment, and the shared
# broker must load the sample task module exactly as a team's JOBS_TASK_MODULES would.
for _name in [
    name for name in os.environ if name.startswith("JOBS_") and not name.startswith("JOBS_TEST_")
]:
    del os.environ[_name]
os.environ["JOBS_TASK_MODULES"] = "tests.support.sample_tasks"
os.environ["JOBS_LOG_FORMAT"] = "json"

import httpx  # noqa: E402
import pytest  # noqa: E402
import structlog  # noqa: E402

from tests.support.services import probe_services, redis_url, session_tag  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from fastapi import FastAPI

    from jobs_service.core.settings import Settings

SERVICES = probe_services()
_SKIPPED: list[str] = []
_NEEDS_SERVICES = ("integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tiers; skip (or, under CI, fail) service tests when a service is missing."""
    del config
    for item in items:
        parts = Path(str(item.fspath)).parts
        tier = next((name for name in _NEEDS_SERVICES if name in parts), None)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
        if tier is not None and SERVICES.missing:
            if os.environ.get("CI") == "true":
                pytest.exit(
                    f"CI=true but {', '.join(SERVICES.missing)} is unreachable: "
                    "integration tests cannot be skipped in CI",
                    returncode=3,
                )
            _SKIPPED.append(item.nodeid)
            item.add_marker(pytest.mark.skip(reason="needs " + ", ".join(SERVICES.missing)))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One visible line about skipped service tests."""
    if _SKIPPED:
        terminalreporter.write_line(
            f"SKIPPED {len(_SKIPPED)} integration/e2e tests: {', '.join(SERVICES.missing)} "
            "unreachable. Start them with `make dev-up`, or set JOBS_TEST_DATABASE_URL / "
            "JOBS_TEST_REDIS_URL.",
            yellow=True,
            bold=True,
        )


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The service runs on asyncio (uvloop in production)."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _reset_global_state() -> Any:
    """Each test starts with no bound log context and no runtime on the shared broker."""
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    from jobs_service.broker import broker  # noqa: PLC0415

    for attribute in ("runtime", "owns_runtime"):
        with contextlib.suppress(AttributeError, KeyError):
            delattr(broker.state, attribute)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for this test."""
    return f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def make_settings(sqlite_url: str) -> Callable[..., Settings]:
    """Build settings from keyword overrides (default: this test's SQLite file)."""
    from jobs_service.core.settings import Settings  # noqa: PLC0415

    def build(**overrides: Any) -> Settings:
        overrides.setdefault("database_url", sqlite_url)
        return Settings(**overrides)

    return build


@contextlib.asynccontextmanager
async def asgi_client(
    app: FastAPI, client_host: str = "127.0.0.1"
) -> AsyncIterator[httpx.AsyncClient]:
    """Talk to an app in-process (no sockets) as a caller at ``client_host``."""
    transport = httpx.ASGITransport(app=app, client=(client_host, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


@contextlib.asynccontextmanager
async def serve_app(
    app: FastAPI, client_host: str = "127.0.0.1"
) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and talk to it in-process (no sockets)."""
    async with app.router.lifespan_context(app), asgi_client(app, client_host) as client:
        yield client


@pytest.fixture(scope="session")
def redis_prefix() -> Any:
    """A key prefix owned by this session; its keys are deleted at the end."""
    prefix = f"jobs-test-{session_tag}"
    yield prefix
    if SERVICES.redis:
        import redis  # noqa: PLC0415

        client = redis.Redis.from_url(redis_url())
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


# Database fixtures are synchronous (each setup runs its own short event loop) so that
# both async tests and the synchronous end-to-end tests can use them.


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database for this session, migrated to head, dropped at the end."""
    from jobs_service.core.settings import DatabaseSettings  # noqa: PLC0415
    from jobs_service.infrastructure import migrate  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415
    from tests.support.databases import create_database, drop_database  # noqa: PLC0415

    name = f"jobs_test_{session_tag}"

    async def setup() -> str:
        url = await create_database(name)
        database = Database(url, DatabaseSettings())
        await migrate.upgrade(database)
        await database.close()
        return url

    yield asyncio.run(setup())
    asyncio.run(drop_database(name))


@pytest.fixture(params=["postgresql", "sqlite"])
async def any_database(request: pytest.FixtureRequest, pg_url: str, sqlite_url: str) -> Any:
    """Each kind of database in turn, migrated: the session's PostgreSQL database, then
    this test's SQLite file (for code whose statements differ between the two)."""
    from jobs_service.core.settings import DatabaseSettings  # noqa: PLC0415
    from jobs_service.infrastructure import migrate  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415

    database = Database(pg_url if request.param == "postgresql" else sqlite_url, DatabaseSettings())
    if request.param == "sqlite":
        await migrate.upgrade(database)
    yield database
    await database.close()


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test."""
    import uuid  # noqa: PLC0415

    from tests.support.databases import create_database, drop_database  # noqa: PLC0415

    name = f"jobs_test_{session_tag}_{uuid.uuid4().hex[:6]}"
    yield asyncio.run(create_database(name))
    asyncio.run(drop_database(name))


@pytest.fixture
def migrated_pg_url(empty_pg_url: str) -> str:
    """A PostgreSQL database of this test's own, migrated to head: for tests of jobs that
    look at every run (sweeps, outboxes), which the shared database's other runs would
    disturb."""
    from jobs_service.core.settings import DatabaseSettings  # noqa: PLC0415
    from jobs_service.infrastructure import migrate  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415

    async def setup() -> None:
        database = Database(empty_pg_url, DatabaseSettings())
        await migrate.upgrade(database)
        await database.close()

    asyncio.run(setup())
    return empty_pg_url
