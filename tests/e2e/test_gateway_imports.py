"""The gateway process never imports the Microsoft Graph SDK; only workers do, lazily.

A ``sitecustomize`` hook in the child process records any import of ``msgraph`` to a
file. The gateway is then exercised the way operators use it — submitting an agent
task, reading runs, the OpenAPI document, metrics — and must leave no record.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.support.processes import ROOT, free_port, jobsctl, started, wait_for_http
from tests.support.services import redis_url

_HOOK = """
import importlib.abc, os, sys

class _Tell(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "msgraph" or name.startswith("msgraph."):
            with open(os.environ["JOBS_TEST_IMPORT_LOG"], "a") as log:
                log.write(name + "\\n")
        return None

sys.meta_path.insert(0, _Tell())
"""


def _hooked_env(tmp_path: Path, extra: dict[str, str]) -> tuple[dict[str, str], Path]:
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(_HOOK)
    record = tmp_path / "imports.log"
    env = {
        "PYTHONPATH": f"{hook_dir}:{ROOT}",
        "JOBS_TEST_IMPORT_LOG": str(record),
        **extra,
    }
    return env, record


def test_the_hook_sees_an_import_of_msgraph(tmp_path: Path) -> None:
    env, record = _hooked_env(tmp_path, {})
    subprocess.run([sys.executable, "-c", "import msgraph"], env=env, check=True, timeout=120)
    assert record.read_text().splitlines()[0] == "msgraph"


def test_the_gateway_never_imports_msgraph(tmp_path: Path, pg_url: str, redis_prefix: str) -> None:
    config = tmp_path / "jobs.toml"
    config.write_text(
        '[graph]\ntenant_id = "contoso"\nclient_id = "app"\nclient_secret = "s"\n'
        'sender = "jobs@contoso.example"\n\n'
        '[channels.teams.sales]\nwebhook_url = "http://127.0.0.1:9/workflows/sales"\n'
    )
    env, record = _hooked_env(
        tmp_path,
        {
            "JOBS_DATABASE_URL": pg_url,
            "JOBS_REDIS_URL": redis_url(),
            "JOBS_REDIS_PREFIX": f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
            "JOBS_CONFIG_FILE": str(config),
        },
    )
    assert jobsctl("migrate", env=env).returncode == 0
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    log = tmp_path / "api.log"
    with started("api", "--port", str(port), env=env, log=log) as gateway:
        wait_for_http(f"{api}/ready", process=gateway, log=log)
        submitted = httpx.post(
            f"{api}/v1/tasks/run_agent_task",
            json={
                "kwargs": {
                    "agent": "kpi",
                    "deliver_to": {"teams_channel": "sales", "email": ["ops@contoso.example"]},
                }
            },
            timeout=10,
        )
        run = httpx.get(f"{api}/v1/runs/{submitted.json()['run_id']}", timeout=10)
        openapi = httpx.get(f"{api}/openapi.json", timeout=10)
        metrics = httpx.get(f"{api}/metrics", timeout=10)
        tasks = httpx.get(f"{api}/v1/tasks", timeout=10)
    assert submitted.status_code == 202, submitted.text
    assert run.json()["deliver_to"]["teams_channel"] == "sales"
    assert (openapi.status_code, metrics.status_code, tasks.status_code) == (200, 200, 200)
    assert not record.exists(), record.read_text()
