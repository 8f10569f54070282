"""jobsctl: help everywhere, one-line errors with exit code 2, embedded enqueue."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from jobs_service.infrastructure.migrate import head_revision
from tests.support.processes import free_port, jobsctl

if TYPE_CHECKING:
    from pathlib import Path

COMMANDS = [
    "run",
    "api",
    "worker",
    "scheduler",
    "migrate",
    "check",
    "tasks",
    "enqueue",
    "runs",
    "schedules",
    "webhooks",
    "audit",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    """`jobsctl <command> --help` exits 0 and describes the command."""
    result = jobsctl(command, "--help", env={})
    assert result.returncode == 0
    assert "usage: jobsctl" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["runs", "--limit", "0"], "0 must be at least 1"),
        (["worker", "--concurrency", "many"], "'many' is not a whole number"),
        (["api", "--port", "70000"], "not a port"),
        (["enqueue", "count_items", "--kwargs", "{not json"], "--kwargs is not valid JSON"),
        (["enqueue", "count_items", "--kwargs", "[1]"], "must be a JSON object"),
        (["enqueue", "no_such_task"], "no task named 'no_such_task'"),
        (["enqueue", "count_items", "--kwargs", '{"items": 3}'], "invalid kwargs for count_items"),
        (["worker"], "JOBS_REDIS_URL is not set"),
        (["scheduler"], "JOBS_REDIS_URL is not set"),
        (["api", "--port", "1"], "JOBS_REDIS_URL is not set: `jobsctl api` queues runs"),
    ],
)
def test_wrong_arguments_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """A mistake is one line on stderr naming it, and exit code 2."""
    env = {"JOBS_TASK_MODULES": "tests.support.sample_tasks"}
    result = jobsctl(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOBS_DATABASE_URL": "mysql://nope"}, "configuration error: database_url"),
        ({"JOBS_BROKER__XREAD_COUNT": "zero"}, "configuration error: broker.xread_count"),
        ({"JOBS_CONFIG_FILE": "/nonexistent/jobs.toml"}, "does not exist"),
        ({"JOBS_TASK_MODULES": "myapp.not_there"}, "task module 'myapp.not_there' failed"),
    ],
)
def test_bad_configuration_is_one_line(tmp_path: Path, env: dict[str, str], message: str) -> None:
    """Bad settings or an unimportable task module stop the command in one line."""
    result = jobsctl("tasks", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr


def test_a_broken_task_module_stops_a_plain_taskiq_worker(tmp_path: Path) -> None:
    """`taskiq worker` with a module that raises on import fails at start, loudly."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from tests.support.processes import ROOT  # noqa: PLC0415

    (tmp_path / "broken_jobs.py").write_text("raise ImportError('missing dependency x')\n")
    result = subprocess.run(
        [sys.executable, "-c", "import jobs_service.broker"],
        env={
            "PYTHONPATH": f"{tmp_path}:{ROOT}",
            "JOBS_TASK_MODULES": "broken_jobs",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "task module 'broken_jobs' failed to import" in result.stderr
    assert "missing dependency x" in result.stderr


def test_a_task_module_that_reuses_a_task_name_is_refused(tmp_path: Path) -> None:
    """A team module registering ``cleanup_old_runs`` would silently replace the
    built-in task (and drop its nightly schedule): the service refuses to start."""
    (tmp_path / "team_jobs.py").write_text(
        "from jobs_service.broker import broker\n"
        "@broker.task(task_name='cleanup_old_runs')\n"
        "async def cleanup_old_runs() -> None: ...\n"
    )
    result = jobsctl("check", env={"PYTHONPATH": str(tmp_path), "JOBS_TASK_MODULES": "team_jobs"})
    assert result.returncode == 1  # check reports it as a problem among the others
    assert (
        "problem: task_modules: task module 'team_jobs' registers 'cleanup_old_runs', "
        "already registered by jobs_service.tasks.maintenance; task names must be unique"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_embedded_enqueue_runs_in_process_and_prints_the_summary(tmp_path: Path) -> None:
    """Without Redis, `enqueue` runs the task here, records it and prints the summary."""
    env = {"JOBS_TASK_MODULES": "tests.support.sample_tasks"}
    result = jobsctl(
        "enqueue", "count_items", "--kwargs", '{"items": ["a", "b"]}', env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["status"] == "succeeded"
    assert output["summary"] == {"processed": 2, "errors": 0}
    listed = jobsctl("runs", "--task", "count_items", env=env, cwd=tmp_path)
    assert output["run_id"] in listed.stdout
    assert "succeeded" in listed.stdout
    shown = json.loads(jobsctl("runs", output["run_id"], env=env, cwd=tmp_path).stdout)
    assert shown["source"] == "cli"
    failed = jobsctl("enqueue", "fail_on_purpose", env=env, cwd=tmp_path)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"]["type"] == "RuntimeError"


def test_an_idempotency_key_the_header_would_refuse_is_one_line(tmp_path: Path) -> None:
    """The HTTP header's rules hold for every producer: a 300-character key was a
    DataError traceback on PostgreSQL and accepted by SQLite."""
    env = {"JOBS_TASK_MODULES": "tests.support.sample_tasks"}
    for key in ("k" * 300, "has space"):
        result = jobsctl(
            "enqueue", "count_items", "--kwargs", '{"items": []}', "--idempotency-key", key,
            env=env, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.strip().splitlines()[-1:]
        assert "Idempotency-Key must be 1 to 255 printable ASCII characters" in line
        assert "Traceback" not in result.stderr
    listed = jobsctl("runs", "--task", "count_items", "--json", env=env, cwd=tmp_path)
    assert json.loads(listed.stdout) == []


def test_tasks_lists_the_registry(tmp_path: Path) -> None:
    """`jobsctl tasks --json` has the built-ins with their schedules."""
    result = jobsctl("tasks", "--json", env={}, cwd=tmp_path)
    tasks = {task["name"]: task for task in json.loads(result.stdout)}
    assert tasks["check_system_health"]["schedules"] == [{"cron": "*/5 * * * *", "timezone": "UTC"}]
    assert tasks["cleanup_old_runs"]["timeout"] == 1800


def test_migrate_up_and_down(tmp_path: Path) -> None:
    """`jobsctl migrate` reports the revision; --downgrade base empties the schema."""
    up = jobsctl("migrate", env={}, cwd=tmp_path)
    assert up.returncode == 0
    assert f"revision {head_revision()}" in up.stdout
    down = jobsctl("migrate", "--downgrade", "base", env={}, cwd=tmp_path)
    assert down.returncode == 0
    assert "base (empty)" in down.stdout


def test_schedules_list_show_pause_resume_trigger(tmp_path: Path) -> None:
    """The schedules commands work on the embedded database and print what they did."""
    import asyncio  # noqa: PLC0415

    from jobs_service.broker import broker  # noqa: PLC0415
    from jobs_service.core.settings import Settings  # noqa: PLC0415
    from jobs_service.infrastructure import migrate  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415
    from jobs_service.scheduler.labels import sync_label_schedules  # noqa: PLC0415

    async def prepare() -> None:
        settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/var/jobs.db")
        database = Database(settings.database_url, settings.database)
        await migrate.upgrade(database)
        await sync_label_schedules(database, broker)
        await database.close()

    asyncio.run(prepare())
    env = {"JOBS_TASK_MODULES": "tests.support.sample_tasks"}
    listed = jobsctl("schedules", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "check_system_health" in listed.stdout
    assert "cron */5 * * * * (UTC)" in listed.stdout
    rows = json.loads(jobsctl("schedules", "list", "--json", env=env, cwd=tmp_path).stdout)
    health = next(row for row in rows if row["name"] == "check_system_health")
    sid = str(health["id"])
    shown = json.loads(jobsctl("schedules", "show", sid, env=env, cwd=tmp_path).stdout)
    assert len(shown["next_fires"]) == 5
    paused = json.loads(
        jobsctl("schedules", "pause", sid, "--note", "db upgrade", env=env, cwd=tmp_path).stdout
    )
    assert (paused["enabled"], paused["next_fires"]) == (False, [])
    assert "paused" in jobsctl("schedules", "list", env=env, cwd=tmp_path).stdout
    resumed = json.loads(jobsctl("schedules", "resume", sid, env=env, cwd=tmp_path).stdout)
    assert resumed["enabled"] is True
    triggered = jobsctl("schedules", "trigger", sid, env=env, cwd=tmp_path)
    run_id = json.loads(triggered.stdout)["run_id"]
    run = json.loads(jobsctl("runs", run_id, env=env, cwd=tmp_path).stdout)
    assert (run["source"], run["schedule_id"], run["status"]) == ("schedule", int(sid), "succeeded")
    missing = jobsctl("schedules", "show", "999", env=env, cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "jobsctl schedules: no schedule 999"


def test_webhooks_list_show_replay(tmp_path: Path) -> None:
    """The inbox commands read the embedded database and replay an event whose run has
    ended; one whose run has not is refused, saying why."""
    import asyncio  # noqa: PLC0415

    from jobs_service.core.settings import Settings  # noqa: PLC0415
    from jobs_service.infrastructure import migrate  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415
    from jobs_service.infrastructure.repositories import webhooks as repo  # noqa: PLC0415

    async def prepare() -> None:
        from datetime import UTC, datetime  # noqa: PLC0415

        settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/var/jobs.db")
        database = Database(settings.database_url, settings.database)
        await migrate.upgrade(database)
        events = [
            repo.NewEvent(
                source="billing",
                external_id=f"evt-{n}",
                event_type="paid",
                headers={"webhook-signature": "[redacted]"},
                body='{"type": "paid"}',
                task="record_webhook",
                run_id=letter * 32,
                received_at=datetime.now(UTC),
            )
            for n, letter in ((1, "f"), (2, "e"))
        ]
        async with database.engine.begin() as connection:
            ids = await repo.insert_events(connection, events)
            await repo.mark_finished(
                connection, [(ids["f" * 32], "failed", "f" * 32, None)], datetime.now(UTC)
            )
        await database.close()

    asyncio.run(prepare())
    env = {"JOBS_TASK_MODULES": "tests.support.sample_tasks"}
    listed = jobsctl("webhooks", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "billing" in listed.stdout
    assert "accepted" in listed.stdout
    shown = json.loads(jobsctl("webhooks", "show", "1", env=env, cwd=tmp_path).stdout)
    assert shown["body"] == {"type": "paid"}
    replayed = jobsctl("webhooks", "replay", "1", env=env, cwd=tmp_path)
    run_id = json.loads(replayed.stdout)["run_id"]
    run = json.loads(jobsctl("runs", run_id, env=env, cwd=tmp_path).stdout)
    assert (run["task"], run["kwargs"], run["status"]) == (
        "record_webhook",
        {"event_id": 1},
        "succeeded",
    )
    in_progress = jobsctl("webhooks", "replay", "2", env=env, cwd=tmp_path)
    assert in_progress.returncode == 1
    assert in_progress.stderr.startswith(
        "jobsctl webhooks: webhook event 2 is accepted: its run " + "e" * 32
    )
    missing = jobsctl("webhooks", "show", "42", env=env, cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "jobsctl webhooks: no webhook event 42"


def test_schedules_list_shows_every_schedule_past_a_page(tmp_path: Path) -> None:
    """1,001 schedules: the list pages through them all, each once (it stopped at the
    first page of 500, and printed the look-ahead row as a 501st)."""
    import asyncio  # noqa: PLC0415
    from datetime import UTC, datetime  # noqa: PLC0415

    from jobs_service.core.settings import Settings  # noqa: PLC0415
    from jobs_service.infrastructure import migrate  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415
    from jobs_service.infrastructure.models import Schedule  # noqa: PLC0415

    async def prepare() -> None:
        settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/var/jobs.db")
        database = Database(settings.database_url, settings.database)
        await migrate.upgrade(database)
        now = datetime.now(UTC)
        async with database.sessions.begin() as session:
            session.add_all(
                Schedule(
                    name=f"bulk-{n:04d}",
                    task="count_items",
                    kwargs={"items": []},
                    kind="interval",
                    interval_s=3600,
                    anchor_at=now,
                    source="api",
                    created_at=now,
                    updated_at=now,
                )
                for n in range(1001)
            )
        await database.close()

    asyncio.run(prepare())
    env = {"JOBS_TASK_MODULES": "tests.support.sample_tasks"}
    listed = jobsctl("schedules", "list", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = [row["name"] for row in json.loads(listed.stdout)]
    assert names == [f"bulk-{n:04d}" for n in range(1001)]


@pytest.mark.parametrize("command", ["api", "run"])
def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path: Path, command: str) -> None:
    """Exit 1 with the reason, and ``jobsctl run`` has not migrated (no database file)
    nor started its scheduler by then. (``jobsctl api`` checks the schema before it
    binds, so its database is migrated first.)"""
    import socket  # noqa: PLC0415

    if command == "api":
        _migrate_default_database(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The gateway alone needs a broker URL; nothing connects to it before the bind.
        env = {"JOBS_REDIS_URL": "redis://127.0.0.1:1/0"} if command == "api" else {}
        result = jobsctl(command, "--port", str(port), env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"jobsctl {command}: cannot listen on 127.0.0.1:{port}: the port is in use"
    )
    if command == "run":
        assert not (tmp_path / "var" / "jobs.db").exists()


def test_api_refuses_a_sqlite_database_never_migrated_without_creating_it(
    tmp_path: Path,
) -> None:
    """Outside ``jobsctl run`` (which migrates) the gateway does not start on a database
    without the schema, and saying so leaves no empty database file behind."""
    env = {"JOBS_REDIS_URL": "redis://127.0.0.1:1/0"}  # never reached: the check comes first
    result = jobsctl("api", "--port", str(free_port()), env=env, cwd=tmp_path, timeout=30)
    assert result.returncode == 1
    assert result.stderr == (
        "jobsctl api: the database has no Jobs Service tables yet: run `jobsctl migrate` "
        "first (`jobsctl run` migrates by itself)\n"
    )
    assert not (tmp_path / "var" / "jobs.db").exists()


def _migrate_default_database(directory: Path) -> None:
    """The SQLite file a command run in ``directory`` uses by default, at head."""
    import asyncio  # noqa: PLC0415

    from jobs_service.core.settings import DatabaseSettings  # noqa: PLC0415
    from jobs_service.infrastructure import migrate  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415

    async def upgrade() -> None:
        database = Database(f"sqlite+aiosqlite:///{directory}/var/jobs.db", DatabaseSettings())
        try:
            await migrate.upgrade(database)
        finally:
            await database.close()

    asyncio.run(upgrade())


@pytest.mark.parametrize("command", ["api", "run"])
def test_a_webhook_route_to_an_unregistered_task_is_one_line_before_listening(
    tmp_path: Path, command: str
) -> None:
    """The gateway refuses a route to a missing task as it refuses ``scheme = "none"`` in
    production: one line naming the event type that routes there, exit 2, before the
    port is bound (it is taken here, and that is not what is reported) and before
    ``jobsctl run`` migrates."""
    import socket  # noqa: PLC0415

    config = tmp_path / "jobs.toml"
    config.write_text(
        '[webhooks.sources.billing]\nscheme = "none"\n'
        'routes = { "invoice.paid" = "record_payment" }\n'
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The gateway alone needs a broker URL; nothing connects to it before the bind.
        env = {"JOBS_REDIS_URL": "redis://127.0.0.1:1/0"} if command == "api" else {}
        result = jobsctl(
            "--config", str(config), command, "--port", str(port), env=env, cwd=tmp_path
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"jobsctl {command}: webhooks.sources.billing: route task 'record_payment' is not "
        "registered (event type 'invoice.paid' routes there); refusing to start"
    ]
    assert not (tmp_path / "var" / "jobs.db").exists()


def test_a_database_run_cannot_open_is_one_line(tmp_path: Path) -> None:
    """``jobsctl run`` migrates as it starts: a database that refuses it (here a
    directory where the file should be) is the one line every command gives and exit 1,
    not uvicorn's traceback with SQLAlchemy's text and exit 3."""
    (tmp_path / "jobs.db").mkdir()
    env = {"JOBS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"}
    result = jobsctl("run", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Background on this error" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("jobsctl ")]
    assert lines == [
        "jobsctl run: the database refused or could not be reached (OperationalError: "
        "unable to open database file)"
    ]


def test_a_database_file_run_cannot_create_is_one_line(tmp_path: Path) -> None:
    """``jobsctl run`` finds it as it starts (after listening): a configuration problem,
    one line and exit 2, not uvicorn's traceback and exit 3."""
    (tmp_path / "blocker").write_text("a file where a directory should be\n")
    database = tmp_path / "blocker" / "var" / "jobs.db"
    env = {"JOBS_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    result = jobsctl("run", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("jobsctl ")]
    assert lines == [f"jobsctl run: database_url: cannot create {database.parent}: Not a directory"]


def test_schedules_actions_that_cannot_be_done_are_one_line(tmp_path: Path) -> None:
    """Resuming a finished one-off, or triggering a schedule whose task a deploy removed
    or changed, is one line and exit 2 (like `enqueue` of such a task), not a traceback;
    a schedule whose zone this host lacks is shown, with no next fires and the reason."""
    import asyncio  # noqa: PLC0415
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    from jobs_service.core.settings import Settings  # noqa: PLC0415
    from jobs_service.infrastructure import migrate  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415
    from jobs_service.infrastructure.models import Schedule  # noqa: PLC0415

    now = datetime.now(UTC)
    rows = {
        "finished-once": {"kind": "once", "at": now - timedelta(days=1), "finished_at": now},
        "retired-task": {"kind": "interval", "interval_s": 60, "task": "retire_me"},
        "changed-kwargs": {"kind": "interval", "interval_s": 60, "kwargs": {"items": 5}},
        "unknown-zone": {"kind": "cron", "cron": "0 9 * * 1", "timezone": "America/Nowhere"},
        "paused-unknown-zone": {"kind": "cron", "cron": "0 9 * * 1", "timezone": "Mars/Base"},
    }

    async def prepare() -> dict[str, int]:
        settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/var/jobs.db")
        database = Database(settings.database_url, settings.database)
        await migrate.upgrade(database)
        schedules = {
            name: Schedule(
                **{"task": "count_items", "kwargs": {"items": []}, **columns},
                name=name,
                enabled=name not in ("finished-once", "paused-unknown-zone"),
                anchor_at=now,
                source="api",
                created_at=now,
                updated_at=now,
            )
            for name, columns in rows.items()
        }
        async with database.sessions.begin() as session:
            session.add_all(schedules.values())
        await database.close()
        return {name: schedule.id for name, schedule in schedules.items()}

    ids = {name: str(sid) for name, sid in asyncio.run(prepare()).items()}
    env = {"JOBS_TASK_MODULES": "tests.support.sample_tasks"}
    refused = {
        "resume finished-once": "the schedule would never fire",
        "trigger retired-task": "no task named 'retire_me' is registered",
        "trigger changed-kwargs": "invalid kwargs for count_items: items",
        "resume paused-unknown-zone": "unknown timezone 'Mars/Base'",
    }
    for command, message in refused.items():
        action, name = command.split()
        result = jobsctl("schedules", action, ids[name], env=env, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (command, result.stderr)
        assert result.stderr.startswith("jobsctl schedules: "), command
        assert message in result.stderr, command
    shown = jobsctl("schedules", "show", ids["unknown-zone"], env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["next_fires"] == []
    assert detail["timing_error"] == (
        "unknown timezone 'America/Nowhere' (use an IANA name such as Europe/Berlin)"
    )


def test_the_api_listens_on_every_address_of_its_host() -> None:
    """A host name with several addresses gets a socket each (uvicorn bound them all);
    IPv6 ones are IPv6-only, so ``::`` and ``0.0.0.0`` can both be bound."""
    import socket  # noqa: PLC0415

    from jobs_service.cli.serve import _listen  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sockets = _listen("[::1]", port) + _listen("127.0.0.1", port)
    try:
        families = sorted(listening.family for listening in sockets)
        v6 = next(listening for listening in sockets if listening.family == socket.AF_INET6)
        v6_only = v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    finally:
        for listening in sockets:
            listening.close()
    assert families == sorted([socket.AF_INET, socket.AF_INET6])
    assert v6_only == 1


def test_the_embedded_process_refuses_a_database_other_than_sqlite(tmp_path: Path) -> None:
    """At start `jobsctl run` fails the runs an earlier embedded process left unfinished:
    on a PostgreSQL database shared with workers, those are their live runs. It refuses
    such a database (it checks the URL only, before connecting), and serves none."""
    env = {
        "JOBS_TASK_MODULES": "tests.support.sample_tasks",
        "JOBS_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/jobs",
    }
    result = jobsctl("run", "--port", "1", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("jobsctl run: JOBS_DATABASE_URL is not an SQLite database")
