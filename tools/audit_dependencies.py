"""Audit the locked dependencies for known vulnerabilities (``make audit``).

Exports ``uv.lock`` (every group, exact pins) and runs pip-audit on it, against PyPI's
vulnerability feed and, for what PyPI cannot answer, OSV. Exit codes:

- 0: no known vulnerability in anything audited;
- 1: a known vulnerability (not ignored with ``--ignore-vuln``) — bump the package
  (``uv lock --upgrade-package NAME``) or, with a reason, ignore the id in the Makefile;
- 2 (only with ``--strict``): some dependencies could not be audited.

Without ``--strict`` a service that cannot be reached (offline, a mirror without the
vulnerability API) is a loud warning naming what was not audited, not a failure: the
other checks of ``make verify`` should not depend on a third-party service being up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
_SERVICES = ("pypi", "osv")


def _export(target: Path) -> None:
    uv = os.environ.get("UV", "uv")
    command = [uv, "export", "--frozen", "--format", "requirements-txt", "--no-hashes"]
    command += ["--no-emit-project", "--quiet", "--output-file", str(target)]
    subprocess.run(command, cwd=_ROOT, check=True)  # noqa: S603 - fixed arguments


def _audit(requirements: Path, service: str, ignored: list[str]) -> tuple[dict[str, Any], str]:
    """pip-audit's JSON report, or an empty one and the reason it could not run."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip_audit", "--requirement", str(requirements)]
        command += ["--disable-pip", "--no-deps", "--progress-spinner", "off", "--format"]
        command += ["json", "--output", str(report), "--vulnerability-service", service]
        for vuln in ignored:
            command += ["--ignore-vuln", vuln]
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if not report.is_file() or not report.read_text().strip():
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            return {"dependencies": []}, lines[-1] if lines else f"exit code {done.returncode}"
        return json.loads(report.read_text()), ""


def main() -> int:
    """Run the audit; see the module docstring for the exit codes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="fail when anything is unaudited")
    parser.add_argument("--ignore-vuln", action="append", default=[], metavar="ID")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        _export(requirements)
        pins = [
            line.split("==")[0].strip().lower()
            for line in requirements.read_text().splitlines()
            if "==" in line and not line.startswith(("#", " "))
        ]
        audited: dict[str, dict[str, Any]] = {}
        failures: list[str] = []
        for service in _SERVICES:
            report, failure = _audit(requirements, service, args.ignore_vuln)
            if report["dependencies"]:  # what applies here (environment markers evaluated)
                pins = [dep["name"].lower() for dep in report["dependencies"]]
            skipped = [dep for dep in report["dependencies"] if "skip_reason" in dep]
            if failure:
                failures.append(f"{service}: {failure[:200]}")
            elif skipped:
                failures.append(f"{service}: {len(skipped)} versions unknown to its feed")
            for dependency in report["dependencies"]:
                if "skip_reason" not in dependency:
                    audited.setdefault(dependency["name"].lower(), dependency)
            if len(audited) == len(set(pins)):
                break
    vulnerable = [dep for dep in audited.values() if dep.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            sys.stdout.write(
                f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in: {fixes})\n"
            )
    unaudited = sorted(set(pins) - set(audited))
    sys.stdout.write(
        f"audited {len(audited)} of {len(set(pins))} locked packages, "
        f"{len(vulnerable)} with a known vulnerability\n"
    )
    if unaudited:
        sys.stderr.write(
            f"WARNING: {len(unaudited)} locked packages could not be audited "
            f"({'; '.join(failures) or 'the services do not know these versions'}): "
            f"{', '.join(unaudited[:12])}{' …' if len(unaudited) > 12 else ''}\n"
        )
    if vulnerable:
        return 1
    return 2 if unaudited and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
