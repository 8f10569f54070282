"""compose.dev.yml's checks: the Compose Specification's schema, then the project's rules.

The schema is vendored (``tools/schemas/``). The rules hold what the schema cannot know:
every service built from the Dockerfile runs a real ``jobsctl`` command, its settings
load (environment plus the mounted config file), its healthcheck and published ports are
the ones its process listens on, every ``depends_on`` waits for health or completion,
every one-shot is waited for, and every mounted file exists.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jsonschema
import yaml
from jsonschema.exceptions import best_match
from pydantic import ValidationError

from jobs_service.core.errors import ConfigurationError
from jobs_service.core.settings import Settings, is_loopback_host
from tools.dockerfile_rules import dockerfile_has_healthcheck
from tools.jobsctl_facts import LONG_RUNNING, URL, api_health_paths, parse_jobsctl

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator, Mapping

__all__ = ["compose_problems", "load_compose", "schema_problems"]

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_SCHEMA = ROOT / "tools" / "schemas" / "compose-spec.json"


def load_compose(path: Path) -> dict[str, Any]:
    """The compose file as data (YAML anchors and ``<<`` merge keys resolved)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def schema_problems(compose: Mapping[str, Any]) -> list[str]:
    """Violations of the Compose Specification's schema, with the path of each."""
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    # For a oneOf, the alternative that came closest; an "unevaluated properties" error
    # only repeats, one level up, that something inside the same object failed.
    errors = [best_match([error]) for error in validator.iter_errors(compose)]
    causes = {e.json_path for e in errors if e.validator != "unevaluatedProperties"}
    return [
        f"{error.json_path.removeprefix('$.') or '(top level)'}: {error.message}"
        for error in sorted(errors, key=lambda e: e.json_path)
        if error.validator != "unevaluatedProperties"
        or not any(cause.startswith(f"{error.json_path}.") for cause in causes)
    ]


def compose_problems(compose: Mapping[str, Any], root: Path = ROOT) -> list[str]:
    """Schema violations, then the project's rules for every service."""
    problems = schema_problems(compose)
    if problems:  # the rules below assume the shapes the schema guarantees
        return problems
    services: dict[str, Any] = compose.get("services") or {}
    volumes = set(compose.get("volumes") or {})
    image_healthcheck = dockerfile_has_healthcheck(root)
    for name, service in services.items():
        where = f"services.{name}"
        problems += [f"{where}.depends_on: {p}" for p in _dependencies(service, services)]
        problems += [f"{where}.volumes: {p}" for p in _mount_problems(service, volumes, root)]
        if "build" in service:
            problems += [f"{where}: {p}" for p in _built_service(name, service, services, root)]
            problems += [f"{where}.build: {p}" for p in _build_context(service, root)]
        for target, condition in _conditions(service).items():
            if condition == "service_healthy" and not _has_healthcheck(
                services.get(target, {}), image_healthcheck
            ):
                problems.append(
                    f"{where}.depends_on.{target}: waits for service_healthy, but "
                    f"{target} has no healthcheck"
                )
    problems += _unadopted_one_shots(services)
    return problems


def _conditions(service: Mapping[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "")
    return {target: spec.get("condition", "") for target, spec in depends.items()}


def _dependencies(service: Mapping[str, Any], services: Mapping[str, Any]) -> Iterator[str]:
    if isinstance(service.get("depends_on"), list):
        yield "use the long form: every dependency names the condition it waits for"
        return
    for target, condition in _conditions(service).items():
        if target not in services:
            yield f"{target} is not a service of this file"
        elif condition == "service_completed_successfully" and _is_long_running(services[target]):
            yield f'{target} is not a one-shot (restart: "no"), so it never completes'
        elif condition not in ("service_healthy", "service_completed_successfully"):
            yield (
                f"{target}: condition {condition} gates nothing; wait for service_healthy "
                "(with a healthcheck) or service_completed_successfully (a one-shot)"
            )


def _is_long_running(service: Mapping[str, Any]) -> bool:
    """Not a one-shot: a one-shot says so with ``restart: "no"``."""
    return str(service.get("restart", "")) != "no"


def _has_healthcheck(service: Mapping[str, Any], image_healthcheck: bool) -> bool:
    check = service.get("healthcheck") or {}
    if check.get("disable") or check.get("test") in (["NONE"], "NONE"):
        return False
    return bool(check.get("test")) or ("build" in service and image_healthcheck)


def _unadopted_one_shots(services: Mapping[str, Any]) -> Iterator[str]:
    """A one-shot that no long-running service waits for makes ``up --wait`` exit 1."""
    for name, service in services.items():
        if _is_long_running(service):
            continue
        adopted = any(
            _conditions(other).get(name) == "service_completed_successfully"
            for other in services.values()
            if _is_long_running(other)
        )
        if not adopted:
            yield (
                f"services.{name}: a one-shot (restart: no) that no long-running service "
                "waits for with service_completed_successfully"
            )


def _mounts(service: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(type, source, target) of each volume entry, short or long syntax."""
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            yield entry.get("type", "volume"), str(entry.get("source", "")), entry["target"]
            continue
        source, _, rest = str(entry).partition(":")
        if not rest:  # an anonymous volume: just a container path
            continue
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        yield kind, source, rest.partition(":")[0]


def _mount_problems(service: Mapping[str, Any], volumes: set[str], root: Path) -> Iterator[str]:
    for kind, source, target in _mounts(service):
        if kind == "bind" and not (root / source).exists():
            yield f"{source} (mounted at {target}) does not exist"
        elif kind == "volume" and source and source not in volumes:
            yield f"named volume {source} is not declared under the top-level volumes"


def _build_context(service: Mapping[str, Any], root: Path) -> Iterator[str]:
    build = service["build"]
    context = root / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    if not (context / dockerfile).is_file():
        yield f"{context / dockerfile} does not exist"


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(str(item).partition("=")[::2] for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


@contextlib.contextmanager
def _jobs_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Exactly ``values`` as the ``JOBS_*`` environment while settings load."""
    saved = {key: value for key, value in os.environ.items() if key.startswith("JOBS_")}
    for key in saved:
        del os.environ[key]
    os.environ.update({k: v for k, v in values.items() if k.startswith("JOBS_")})
    try:
        yield
    finally:
        for key in [key for key in os.environ if key.startswith("JOBS_")]:
            del os.environ[key]
        os.environ.update(saved)


def _built_service(
    name: str, service: Mapping[str, Any], services: Mapping[str, Any], root: Path
) -> Iterator[str]:
    """A process of the service: a real command, settings that load, honest health."""
    command = service.get("command")
    if not isinstance(command, list):
        yield "command: give the jobsctl arguments as a list (exec form)"
        return
    args, error = parse_jobsctl([str(part) for part in command])
    if args is None:
        yield f"command {command} is not a jobsctl command: {error}"
        return
    if _is_long_running(service) != (args.command in LONG_RUNNING):
        kind = "serves until stopped" if args.command in LONG_RUNNING else "exits when done"
        yield f'command {args.command} {kind}: restart: "no" is for one-shots only'
    settings, problems = _container_settings(service, root)
    yield from problems
    environment = _environment(service)
    for variable in ("JOBS_DATABASE_URL", "JOBS_REDIS_URL"):
        host = urlsplit(environment.get(variable, "")).hostname
        if host and host not in services:
            yield f"{variable} names host {host}, which is not a service of this file"
        elif host and host not in _conditions(service):
            yield f"{variable} names {host}, which depends_on does not wait for"
    if settings is not None:
        yield from _listening(name, service, args, settings)


def _container_settings(
    service: Mapping[str, Any], root: Path
) -> tuple[Settings | None, list[str]]:
    """The settings the container's process would load, or why they would not load."""
    environment = _environment(service)
    config_file = None
    if "JOBS_CONFIG_FILE" in environment:
        inside = environment.pop("JOBS_CONFIG_FILE")
        sources = [s for kind, s, target in _mounts(service) if kind == "bind" and target == inside]
        if not sources:
            return None, [f"JOBS_CONFIG_FILE {inside} is not a file mounted from the project"]
        config_file = root / sources[0]
        if not config_file.is_file():
            return None, []  # reported as a missing mount source
    try:
        with _jobs_environment(environment):
            return Settings.load(config_file=config_file), []
    except (ValidationError, ConfigurationError) as exc:
        first = str(exc).strip().splitlines()
        return None, [f"its settings do not load: {' '.join(first[:3])}"]


def _served(args: argparse.Namespace, settings: Settings) -> tuple[str, int, frozenset[str]]:
    """(host, port, paths) the command listens on; port 0 when it serves nothing."""
    if args.command in ("api", "run"):
        host = args.host or settings.api.host
        return host, args.port or settings.api.port, api_health_paths()
    if args.command == "worker":
        worker = settings.worker
        return worker.metrics_host, worker.metrics_port, frozenset({"/metrics"})
    if args.command == "scheduler":
        scheduler = settings.scheduler
        return scheduler.metrics_host, scheduler.metrics_port, frozenset({"/metrics"})
    return "127.0.0.1", 0, frozenset()


def _listening(
    name: str, service: Mapping[str, Any], args: argparse.Namespace, settings: Settings
) -> Iterator[str]:
    host, port, paths = _served(args, settings)
    if args.command in ("api", "run") and not settings.api_keys and not is_loopback_host(host):
        yield f"jobsctl {args.command} binds {host} without [[api_keys]]: it refuses to start"
    published = [_container_port(entry) for entry in service.get("ports") or []]
    for container_port in published:
        if container_port != port:
            yield f"ports: publishes {container_port}, but {name} listens on {port or 'none'}"
        elif is_loopback_host(host):
            yield f"ports: {name} listens on {host}:{port}, unreachable from outside"
    check = service.get("healthcheck") or {}
    if check.get("disable") or not _is_long_running(service):
        return
    test = check.get("test")
    if not test:
        if args.command not in ("api", "run"):
            yield (
                "healthcheck: none of its own, so it inherits the image's, which asks the "
                f"API on port {settings.api.port}; {name} does not serve it"
            )
        return
    urls = URL.findall(" ".join(test) if isinstance(test, list) else str(test))
    if not urls:
        yield "healthcheck: no http:// URL to check"
    for url in urls:
        parts = urlsplit(url)
        if not (parts.hostname and is_loopback_host(parts.hostname)):
            yield f"healthcheck: {url} is not this container's own loopback address"
        elif parts.port != port or parts.path not in paths:
            expected = ", ".join(sorted(paths)) or "nothing"
            yield f"healthcheck: {url}, but {name} serves {expected} on port {port or 'none'}"


def _container_port(entry: Any) -> int:
    if isinstance(entry, dict):
        return int(entry["target"])
    return int(str(entry).rsplit(":", 1)[-1].split("/")[0])
