"""compose.dev.yml runs what the project has: real jobsctl commands, honest healthchecks.

The file is checked offline by ``tools/compose_rules.py`` (``make check-containers``):
these tests hold that the real file passes, and that each kind of mistake it must catch
(an unknown command or option, a dependency without a health condition, a healthcheck on
the wrong port, a missing mount) is reported.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from jobs_service.core.settings import ApiSettings, SchedulerSettings, Settings, WorkerSettings
from tools import compose_rules as checker
from tools.jobsctl_facts import parse_jobsctl

ROOT = Path(__file__).resolve().parents[3]
REAL = checker.load_compose(ROOT / "compose.dev.yml")
BUILT = ("migrate", "api", "worker", "scheduler")


@pytest.fixture
def compose() -> dict[str, Any]:
    """A private copy of compose.dev.yml's data, to break: through JSON, so services no
    longer share the tables their YAML anchors merged in."""
    return json.loads(json.dumps(REAL))


def problems_of(compose: dict[str, Any]) -> str:
    return "\n".join(checker.compose_problems(compose, ROOT))


def test_the_dev_compose_file_passes_every_check() -> None:
    """The committed file matches the schema and every project rule."""
    assert checker.compose_problems(REAL, ROOT) == []


def test_the_stack_has_every_process_built_from_the_dockerfile() -> None:
    """Infrastructure from images; migrate, api, worker and scheduler from the Dockerfile."""
    services = REAL["services"]
    assert {"postgres", "redis", *BUILT} <= set(services)
    assert all("build" in services[name] for name in BUILT)
    assert REAL["services"]["postgres"]["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    assert set(REAL["volumes"]) == {"postgres-data", "redis-data"}


@pytest.mark.parametrize("name", BUILT)
def test_every_command_is_a_real_jobsctl_command(name: str) -> None:
    """The CLI's own parser accepts each service's command, as the same subcommand."""
    args, error = parse_jobsctl(REAL["services"][name]["command"])
    assert error == ""
    assert args.command == name


def test_healthchecks_ask_the_ports_of_the_settings_defaults() -> None:
    """The API is checked on api.port's default, worker and scheduler on their metrics."""
    services = REAL["services"]
    checks = {name: " ".join(services[name]["healthcheck"]["test"]) for name in BUILT[1:]}
    assert f"http://127.0.0.1:{ApiSettings().port}/health" in checks["api"]
    assert f"http://127.0.0.1:{WorkerSettings().metrics_port}/metrics" in checks["worker"]
    assert f"http://127.0.0.1:{SchedulerSettings().metrics_port}/metrics" in checks["scheduler"]
    assert services["migrate"]["healthcheck"] == {"disable": True}
    assert services["api"]["ports"] == [f"127.0.0.1:{ApiSettings().port}:{ApiSettings().port}"]


def test_long_running_processes_wait_for_the_migration_and_healthy_services() -> None:
    """api, worker and scheduler start after a healthy PostgreSQL and Redis and migrate."""
    expected = {
        "postgres": "service_healthy",
        "redis": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    for name in ("api", "worker", "scheduler"):
        depends = REAL["services"][name]["depends_on"]
        assert {target: spec["condition"] for target, spec in depends.items()} == expected


def test_the_source_is_mounted_over_the_installed_copy_for_reload() -> None:
    """src/ is bind-mounted read-only and imported first, so an edit needs no rebuild."""
    for name in BUILT:
        service = REAL["services"][name]
        mounts = {m["target"]: m for m in service["volumes"]}
        assert mounts["/app/src"]["source"] == "./src"
        assert mounts["/app/src"]["read_only"] is True
        assert service["environment"]["PYTHONPATH"] == "/app/src"


def test_the_dev_api_key_in_the_docs_is_the_one_configured() -> None:
    """dev/jobs.toml holds the SHA-256 of `jobs-dev-key`, with admin scope."""
    settings = Settings.load(config_file=ROOT / "dev" / "jobs.toml")
    (key,) = settings.api_keys
    assert key.sha256 == hashlib.sha256(b"jobs-dev-key").hexdigest()
    assert key.grants("admin")
    assert "jobs-dev-key" in (ROOT / "docs" / "development.md").read_text(encoding="utf-8")


def test_a_key_the_schema_does_not_know_is_rejected(compose: dict[str, Any]) -> None:
    """A misspelt service key fails the Compose Specification's schema."""
    compose["services"]["api"]["comand"] = ["api"]
    assert "services.api: Unevaluated properties are not allowed ('comand'" in problems_of(compose)


def test_a_dependency_without_a_condition_is_rejected(compose: dict[str, Any]) -> None:
    """The short list form of depends_on waits for nothing: it is refused."""
    compose["services"]["api"]["depends_on"] = ["postgres", "redis", "migrate"]
    assert "services.api.depends_on: use the long form" in problems_of(compose)


def test_a_long_form_dependency_missing_its_condition_fails_the_schema(
    compose: dict[str, Any],
) -> None:
    """The schema itself requires `condition` in the long form."""
    del compose["services"]["worker"]["depends_on"]["redis"]["condition"]
    found = problems_of(compose)
    assert "services.worker.depends_on.redis: 'condition' is a required property" in found
    assert "Unevaluated" not in found


def test_service_started_is_not_a_gate(compose: dict[str, Any]) -> None:
    """A dependency must wait for health or completion, not just for a start."""
    compose["services"]["worker"]["depends_on"]["redis"]["condition"] = "service_started"
    assert "redis: condition service_started gates nothing" in problems_of(compose)


def test_waiting_for_the_health_of_a_service_without_a_healthcheck_is_rejected(
    compose: dict[str, Any],
) -> None:
    """service_healthy on a service whose healthcheck is disabled would never start."""
    compose["services"]["api"]["depends_on"]["migrate"] = {"condition": "service_healthy"}
    assert "waits for service_healthy, but migrate has no healthcheck" in problems_of(compose)


def test_waiting_for_a_long_running_service_to_complete_is_rejected(
    compose: dict[str, Any],
) -> None:
    """service_completed_successfully on a service that restarts never comes true."""
    compose["services"]["worker"]["depends_on"]["api"] = {
        "condition": "service_completed_successfully"
    }
    assert 'api is not a one-shot (restart: "no"), so it never completes' in problems_of(compose)


def test_a_one_shot_nobody_waits_for_is_rejected(compose: dict[str, Any]) -> None:
    """`up --wait` fails on a one-shot that no long-running service adopts."""
    for name in ("api", "worker", "scheduler"):
        del compose["services"][name]["depends_on"]["migrate"]
    assert "services.migrate: a one-shot (restart: no) that no long-running" in problems_of(compose)


@pytest.mark.parametrize(
    ("service", "command", "expected"),
    [
        ("worker", ["wrker"], "invalid choice: 'wrker'"),
        ("worker", ["worker", "--threads", "4"], "unrecognized arguments: --threads 4"),
        ("api", ["api", "--port", "70000"], "70000 is not a port"),
        ("scheduler", "scheduler", "give the jobsctl arguments as a list"),
    ],
)
def test_a_command_jobsctl_does_not_have_is_rejected(
    compose: dict[str, Any], service: str, command: Any, expected: str
) -> None:
    """Unknown subcommands, unknown options and invalid values are all caught."""
    compose["services"][service]["command"] = command
    assert expected in problems_of(compose)


def test_a_one_shot_command_in_a_restarting_service_is_rejected(
    compose: dict[str, Any],
) -> None:
    """`jobsctl migrate` exits when done: as a restarting service it would loop."""
    compose["services"]["migrate"]["restart"] = "unless-stopped"
    assert "command migrate exits when done" in problems_of(compose)


def test_a_healthcheck_on_another_port_is_rejected(compose: dict[str, Any]) -> None:
    """The worker's check must ask the port the worker's settings serve metrics on."""
    compose["services"]["worker"]["environment"]["JOBS_WORKER__METRICS_PORT"] = 9500
    found = problems_of(compose)
    assert "healthcheck: http://127.0.0.1:9464/metrics, but worker serves" in found
    assert "ports: publishes 9464, but worker listens on 9500" in found


def test_a_healthcheck_on_a_path_the_api_does_not_serve_is_rejected(
    compose: dict[str, Any],
) -> None:
    """/healthz is not a route of the gateway."""
    test = compose["services"]["api"]["healthcheck"]["test"]
    test[-1] = test[-1].replace("/health", "/healthz")
    assert "healthcheck: http://127.0.0.1:8000/healthz, but api serves" in problems_of(compose)


@pytest.mark.parametrize("name", ["worker", "scheduler"])
def test_a_process_inheriting_the_images_api_healthcheck_is_rejected(
    compose: dict[str, Any], name: str
) -> None:
    """Without its own check a worker or scheduler would be probed on the API's port."""
    del compose["services"][name]["healthcheck"]
    found = problems_of(compose)
    assert f"services.{name}: healthcheck: none of its own, so it inherits the image's" in found


def test_an_api_on_all_addresses_without_keys_is_rejected(compose: dict[str, Any]) -> None:
    """Without the mounted dev config there are no [[api_keys]]: the gateway would exit."""
    del compose["services"]["api"]["environment"]["JOBS_CONFIG_FILE"]
    assert "jobsctl api binds 0.0.0.0 without [[api_keys]]" in problems_of(compose)


def test_a_metrics_endpoint_on_loopback_cannot_be_published(compose: dict[str, Any]) -> None:
    """A published port needs the process to listen beyond the container's loopback."""
    del compose["services"]["worker"]["environment"]["JOBS_WORKER__METRICS_HOST"]
    assert "worker listens on 127.0.0.1:9464, unreachable from outside" in problems_of(compose)


def test_settings_that_do_not_load_are_rejected(compose: dict[str, Any]) -> None:
    """A container whose settings fail validation would exit at start."""
    compose["services"]["worker"]["environment"]["JOBS_WORKER__CONCURRENCY"] = 0
    assert "services.worker: its settings do not load" in problems_of(compose)


def test_a_mount_of_a_missing_file_is_rejected(compose: dict[str, Any]) -> None:
    """Every bind-mounted path exists in the checkout."""
    compose["services"]["api"]["volumes"][1]["source"] = "./dev/missing.toml"
    assert "./dev/missing.toml (mounted at /etc/jobs/jobs.toml) does not exist" in problems_of(
        compose
    )


def test_an_undeclared_named_volume_is_rejected(compose: dict[str, Any]) -> None:
    """A named volume must be declared at the top level."""
    del compose["volumes"]["redis-data"]
    assert "named volume redis-data is not declared" in problems_of(compose)


def test_a_database_host_that_is_not_a_service_is_rejected(compose: dict[str, Any]) -> None:
    """The URLs name compose services, so containers reach each other by name."""
    compose["services"]["scheduler"]["environment"]["JOBS_DATABASE_URL"] = (
        "postgresql+asyncpg://postgres@db:5432/postgres"
    )
    assert "JOBS_DATABASE_URL names host db, which is not a service" in problems_of(compose)
