"""The serving processes (`jobsctl api`, `worker`, `scheduler`) refuse, in one line and
exit 1, a database that answers without this release's schema, before they listen or
start a worker; a database a newer release migrated is accepted and said in the log."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from alembic.script import ScriptDirectory
from sqlalchemy import text

from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure import migrate, migrations
from jobs_service.infrastructure.database import Database
from tests.support.processes import free_port, jobsctl, started, wait_for_http
from tests.support.services import redis_url

if TYPE_CHECKING:
    from collections.abc import Mapping

NO_TABLES = (
    "the database has no Jobs Service tables yet: run `jobsctl migrate` first "
    "(`jobsctl run` migrates by itself)"
)
#: What a newer release's `jobsctl migrate` would have written; no revision of ours.
NEWER = "9999_newer_release"


def _previous_revision() -> str:
    """The revision before this release's head: a database the last upgrade left
    unmigrated."""
    scripts = ScriptDirectory(str(Path(migrations.__file__).parent))
    previous = scripts.get_revision(migrate.head_revision()).down_revision
    assert isinstance(previous, str)
    return previous


async def _migrate(url: str, revision: str, *, stamp: str | None = None) -> None:
    database = Database(url, DatabaseSettings())
    try:
        await migrate.upgrade(database, revision)
        if stamp is not None:
            async with database.engine.begin() as connection:
                await connection.execute(
                    text("UPDATE alembic_version SET version_num = :stamp"), {"stamp": stamp}
                )
    finally:
        await database.close()


@pytest.fixture
def env(redis_prefix: str) -> dict[str, str]:
    """Redis under a key prefix of this test's own (no database yet)."""
    return {
        "JOBS_REDIS_URL": redis_url(),
        "JOBS_REDIS_PREFIX": f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
    }


def _command(process: str) -> tuple[str, ...]:
    if process == "api":
        return ("api", "--port", str(free_port()))
    if process == "worker":
        return ("worker", "--processes", "1")
    return (process,)


def _refusal(process: str, env: Mapping[str, str]) -> str:
    """Start ``process``; it must exit 1 with exactly one line on stderr, which is
    returned (without the command's prefix)."""
    try:
        result = jobsctl(*_command(process), env=env, timeout=30)
    except subprocess.TimeoutExpired as exc:
        output = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        pytest.fail(f"jobsctl {process} started instead of refusing:\n{output[-2000:]}")
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    prefix = f"jobsctl {process}: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0].removeprefix(prefix)


def _assert_no_worker_started(env: Mapping[str, str]) -> None:
    """A worker that started would have made its consumer group and heartbeat keys."""
    client = redis.Redis.from_url(redis_url())
    try:
        assert list(client.scan_iter(match=f"{env['JOBS_REDIS_PREFIX']}*")) == []
    finally:
        client.close()


@pytest.mark.parametrize("process", ["api", "worker"])
def test_a_database_never_migrated_is_refused_in_one_line(
    process: str, empty_pg_url: str, env: dict[str, str]
) -> None:
    """Before, the gateway answered /ready 200 and 500 to every read, and the worker
    logged `relation "job_runs" does not exist` in a loop."""
    env["JOBS_DATABASE_URL"] = empty_pg_url
    assert _refusal(process, env) == NO_TABLES
    _assert_no_worker_started(env)


@pytest.mark.parametrize("process", ["api", "worker", "scheduler"])
def test_a_database_at_an_older_revision_is_refused_naming_both(
    process: str, empty_pg_url: str, env: dict[str, str]
) -> None:
    """An upgrade deployed without `jobsctl migrate`: the database one revision behind
    (only a column missing, which the scheduler's start never touched)."""
    previous, head = _previous_revision(), migrate.head_revision()
    asyncio.run(_migrate(empty_pg_url, previous))
    env["JOBS_DATABASE_URL"] = empty_pg_url
    assert _refusal(process, env) == (
        f"the database is at an older revision ({previous}) than this release ({head}): "
        "run `jobsctl migrate`"
    )
    _assert_no_worker_started(env)


def test_a_database_a_newer_release_migrated_is_served_and_said(
    empty_pg_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    """`jobsctl migrate` runs before the new code rolls out, so this release's processes
    meet the next one's schema while they are replaced (or after a rollback of the
    code): they start, warn, and /ready names the revision."""
    asyncio.run(_migrate(empty_pg_url, "head", stamp=NEWER))
    env["JOBS_DATABASE_URL"] = empty_pg_url
    port = free_port()
    log = tmp_path / "api.log"
    with started("api", "--port", str(port), env=env, log=log) as process:
        ready = wait_for_http(f"http://127.0.0.1:{port}/ready", process=process, log=log)
    database = ready.json()["checks"]["database"]
    assert database["ok"] is True
    assert database["detail"] == (
        f"postgresql, revision {NEWER}, newer than this release's {migrate.head_revision()}"
    )
    output = log.read_text()
    assert '"event":"schema-newer-than-release"' in output
    assert f'"revision":"{NEWER}"' in output
