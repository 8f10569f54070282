"""What an operator meets at the CLI when the database is not what the release needs:
one line naming the cause and the fix, exit 1, never a traceback with SQL in it."""

from __future__ import annotations

import asyncio
import os
import subprocess

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from jobs_service.infrastructure.migrate import head_revision
from tests.support.processes import JOBSCTL, ROOT, free_port, jobsctl

NO_TABLES = "the database has no Jobs Service tables yet: run `jobsctl migrate` first"


def _only_one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("jobsctl ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [
        ("runs",),
        ("runs", "cancel", "0190f0c4e5b27a1c9d3e4f5a6b7c8d9e"),
        ("runs", "retry", "0190f0c4e5b27a1c9d3e4f5a6b7c8d9e"),
        ("schedules", "list"),
        ("schedules", "trigger", "1"),
        ("webhooks", "list"),
    ],
)
def test_an_unmigrated_postgresql_database_is_named(
    empty_pg_url: str, command: tuple[str, ...]
) -> None:
    """PostgreSQL wraps "no such table" differently from SQLite: every command still
    says to migrate."""
    result = jobsctl(*command, env={"JOBS_DATABASE_URL": empty_pg_url})
    assert NO_TABLES in _only_one_line(result)


def test_a_database_at_an_older_revision_is_named(empty_pg_url: str) -> None:
    """New code on a database not yet migrated to it (a missing column)."""
    env = {"JOBS_DATABASE_URL": empty_pg_url}
    assert jobsctl("migrate", "--revision", "0003", env=env).returncode == 0
    line = _only_one_line(jobsctl("runs", env=env))
    assert "is at an older revision than this release: run `jobsctl migrate`" in line
    assert head_revision() != "0003"


@pytest.mark.parametrize(
    ("host", "reason"),
    [("127.0.0.1", "Connection refused"), ("nonexistent.invalid", "gaierror")],
)
def test_an_unreachable_database_is_one_line(host: str, reason: str) -> None:
    port = free_port() if host == "127.0.0.1" else 5432  # nobody listens on a free port
    url = f"postgresql+asyncpg://jobs:s3cret@{host}:{port}/jobs"
    for command in (("schedules", "list"), ("runs", "retry", "abc"), ("webhooks", "list")):
        line = _only_one_line(jobsctl(*command, env={"JOBS_DATABASE_URL": url}))
        assert "the database refused or could not be reached" in line
        assert reason in line
        assert "s3cret" not in line


def test_a_database_that_refuses_the_connection_is_one_line(pg_url: str) -> None:
    url = pg_url.rsplit("/", 1)[0] + "/no_such_database_here"
    line = _only_one_line(jobsctl("runs", env={"JOBS_DATABASE_URL": url}))
    assert 'database "no_such_database_here" does not exist' in line
    assert "SELECT" not in line


@pytest.mark.parametrize(
    ("database", "user", "reason"),
    [
        (
            "no_such_database_here",
            "postgres",
            'InvalidCatalogNameError: database "no_such_database_here" does not exist',
        ),
        (
            None,
            "no_such_role_here",
            'InvalidAuthorizationSpecificationError: role "no_such_role_here" does not exist',
        ),
    ],
    ids=["unknown-database", "unknown-role"],
)
def test_migrate_says_a_refused_connection_in_one_line(
    pg_url: str, database: str | None, user: str, reason: str
) -> None:
    """As every other command says it: the driver's message, without SQLAlchemy's
    wrapper name or its "Background on this error" link on a second line."""
    url = make_url(pg_url).set(username=user, database=database or make_url(pg_url).database)
    result = jobsctl(
        "migrate", env={"JOBS_DATABASE_URL": url.render_as_string(hide_password=False)}
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"jobsctl migrate: the database refused or could not be reached ({reason})"
    ]


def test_a_migration_statement_the_database_refuses_is_one_line(empty_pg_url: str) -> None:
    """A table in the way of the first migration: "migration failed" with the driver's
    message, not SQLAlchemy's text with the CREATE TABLE statement and a link."""

    async def occupy() -> None:
        connection = await asyncpg.connect(
            make_url(empty_pg_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        try:
            await connection.execute("CREATE TABLE job_runs (id integer)")
        finally:
            await connection.close()

    asyncio.run(occupy())
    result = jobsctl("migrate", env={"JOBS_DATABASE_URL": empty_pg_url})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        'jobsctl migrate: migration failed: DuplicateTableError: relation "job_runs" already exists'
    ]


def test_a_reader_that_stops_reading_ends_the_command_quietly() -> None:
    """``jobsctl tasks | head -1``: the closed pipe is the reader's choice, not an
    error worth a traceback; the shell's usual 141 says what happened."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [*JOBSCTL, "tasks"],
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)},
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""


def test_a_wait_the_database_ends_names_the_run_it_queued(redis_prefix: str) -> None:
    """`enqueue --wait` with the database out of reach: the run is sent first (its row
    follows), so it is queued and will run. The line says so and names it, where it
    said only that the database could not be reached, and a second enqueue made a second
    run."""
    import asyncio  # noqa: PLC0415

    import orjson  # noqa: PLC0415
    from redis.asyncio import Redis  # noqa: PLC0415

    from jobs_service.broker import stream_names  # noqa: PLC0415
    from jobs_service.core.settings import Settings  # noqa: PLC0415
    from tests.support.services import redis_url  # noqa: PLC0415

    prefix = f"{redis_prefix}-wait"
    env = {
        "JOBS_DATABASE_URL": f"postgresql+asyncpg://jobs:s3cret@127.0.0.1:{free_port()}/jobs",
        "JOBS_REDIS_URL": redis_url(),
        "JOBS_REDIS_PREFIX": prefix,
        "JOBS_TASK_MODULES": "tests.support.sample_tasks",
    }
    line = _only_one_line(
        jobsctl("enqueue", "count_items", "--kwargs", '{"items": ["a"]}', "--wait", env=env)
    )

    async def queued() -> list[str]:
        async with Redis.from_url(redis_url()) as redis:
            entries = await redis.xrange(stream_names(Settings(redis_prefix=prefix))["stream"])
        return [orjson.loads(fields[b"data"])["task_id"] for _, fields in entries]

    [run_id] = asyncio.run(queued())
    assert line.startswith(f"jobsctl enqueue: run {run_id} is queued, but waiting for it failed")
    assert "the database refused or could not be reached" in line
