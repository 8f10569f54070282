"""Every metric family is exposed where the docs say, after a run, a webhook and a fire.

Production topology: gateway, one worker process and the scheduler as separate
``jobsctl`` processes on the real PostgreSQL and Redis; the only outside party, a Teams
Workflows webhook, is a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fakes.server import serve
from tests.support.fakes.teams import FakeTeamsWorkflows
from tests.support.processes import free_port, jobsctl, started, wait_for_http
from tests.support.services import redis_url

if TYPE_CHECKING:
    from pathlib import Path

KEY = "e2e-metrics-operator"
GH_SECRET = "e2e-metrics-gh-secret"

#: Where each family is served in production (docs/metrics.md says the same).
GATEWAY = {"jobs_webhook_requests", "jobs_queue_up", "jobs_queue_depth"}
GATEWAY |= {"jobs_queue_oldest_age_seconds"}
WORKER = {"jobs_runs", "jobs_run_duration_seconds", "jobs_run_retries", "jobs_dead_runs"}
WORKER |= {"jobs_deliveries"}
SCHEDULER = {"jobs_schedule_fires", "jobs_schedule_skips", "jobs_schedule_misses"}


def _config(path: Path, teams_url: str) -> Path:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    path.write_text(
        f"""
[[api_keys]]
name = "operator"
sha256 = "{digest}"
scopes = ["read", "operate"]

[webhooks.sources.gh]
scheme = "github"
secrets = ["{GH_SECRET}"]
default_task = "record_webhook"

[channels.teams.ops]
webhook_url = "{teams_url}"
"""
    )
    return path


def _scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Family name → {sorted labels → value} of every sample (suffixed samples too)."""
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return {}
    families: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        samples = families.setdefault(family.name, {})
        for sample in family.samples:
            key = (("__name__", sample.name), *sorted(sample.labels.items()))
            samples[key] = sample.value
    return families


def _total(family: dict[tuple[tuple[str, str], ...], float], **labels: str) -> float:
    """Sum of the family's ``_total`` (or plain) samples carrying ``labels``."""
    return sum(
        value
        for key, value in family.items()
        if not dict(key)["__name__"].endswith(("_created", "_bucket", "_sum"))
        and labels.items() <= dict(key).items()
    )


def _post(api: str, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(f"{api}{path}", json=body, headers=headers, timeout=10)


def _github_event(api: str) -> httpx.Response:
    # A body of its own: a GitHub event's id is its body's hash (the database is shared).
    body = b'{"action": "opened", "number": 7, "id": "%s"}' % uuid.uuid4().hex.encode()
    signature = "sha256=" + hmac.new(GH_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": signature,
        "X-GitHub-Delivery": f"d-{uuid.uuid4().hex[:8]}",
        "X-GitHub-Event": "pull_request",
    }
    return httpx.post(f"{api}/webhooks/gh", content=body, headers=headers, timeout=10)


def test_metrics_families_are_exposed_after_a_run_a_webhook_and_a_fire(
    tmp_path: Path, pg_url: str, redis_prefix: str
) -> None:
    """A scheduled run delivered to Teams, a dead run, a signed GitHub event and a paused
    schedule: the gateway, the worker and the scheduler each expose their families with
    the samples those events produced, and the queue reads as drained."""
    teams = FakeTeamsWorkflows()
    ports = {name: free_port() for name in ("api", "worker", "scheduler")}
    api = f"http://127.0.0.1:{ports['api']}"
    urls = {
        "gateway": f"{api}/metrics",
        "worker": f"http://127.0.0.1:{ports['worker']}/metrics",
        "scheduler": f"http://127.0.0.1:{ports['scheduler']}/metrics",
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("api", "worker", "scheduler")}
    with serve(teams.app) as teams_base, contextlib.ExitStack() as stack:
        env = {
            "JOBS_DATABASE_URL": pg_url,
            "JOBS_REDIS_URL": redis_url(),
            "JOBS_REDIS_PREFIX": f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
            "JOBS_CONFIG_FILE": str(_config(tmp_path / "jobs.toml", teams.url(teams_base, "ops"))),
            "JOBS_TASK_MODULES": "tests.support.sample_tasks",
            "JOBS_ENV": "production",
            "JOBS_WORKER__METRICS_PORT": str(ports["worker"]),
            "JOBS_SCHEDULER__METRICS_PORT": str(ports["scheduler"]),
            "JOBS_WORKER__RETRY_BACKOFF_S": "0.1",
            "JOBS_WORKER__RETRY_BACKOFF_MAX_S": "0.2",
        }
        assert jobsctl("migrate", env=env).returncode == 0
        gateway = stack.enter_context(
            started("api", "--port", str(ports["api"]), env=env, log=logs["api"])
        )
        stack.enter_context(started("worker", env=env, log=logs["worker"]))
        stack.enter_context(started("scheduler", env=env, log=logs["scheduler"]))
        wait_for_http(f"{api}/ready", process=gateway, log=logs["api"])
        every_second = {"type": "interval", "seconds": 1}
        fired = _post(
            api,
            "/v1/schedules",
            {
                "name": "metrics-fire",
                "task": "count_items",
                "kwargs": {"items": ["a"]},
                "schedule": every_second,
                "overlap": "allow",
                "deliver_to": {"teams_channel": "ops"},
            },
        )
        paused = _post(
            api,
            "/v1/schedules",
            {"name": "metrics-paused", "task": "count_items", "kwargs": {"items": []}}
            | {"schedule": every_second, "enabled": False},
        )
        dead = _post(api, "/v1/tasks/fail_until_attempt", {"kwargs": {"succeed_at": 10}})
        webhook = _github_event(api)
        assert (fired.status_code, paused.status_code) == (201, 201), (fired.text, paused.text)
        assert (dead.status_code, webhook.status_code) == (202, 202), (dead.text, webhook.text)

        deadline = time.monotonic() + 60
        scraped: dict[str, Any] = {}
        while time.monotonic() < deadline:
            scraped = {name: _scrape(url) for name, url in urls.items()}
            if _settled(scraped):
                break
            time.sleep(0.5)

    logs_tail = {name: path.read_text(errors="replace")[-1500:] for name, path in logs.items()}
    gateway_, worker, scheduler = scraped["gateway"], scraped["worker"], scraped["scheduler"]
    assert gateway_.keys() >= GATEWAY, logs_tail["api"]
    assert worker.keys() >= WORKER, logs_tail["worker"]
    assert scheduler.keys() >= SCHEDULER, logs_tail["scheduler"]
    assert _total(gateway_["jobs_webhook_requests"], source="gh", outcome="accepted") == 1
    assert _total(gateway_["jobs_queue_up"]) == 1
    assert _total(worker["jobs_runs"], task="count_items", status="succeeded") >= 1
    assert _total(worker["jobs_runs"], task="record_webhook", status="succeeded") == 1
    assert _total(worker["jobs_run_duration_seconds"], task="count_items") >= 1
    assert _total(worker["jobs_run_retries"], task="fail_until_attempt") == 2
    assert _total(worker["jobs_dead_runs"], task="fail_until_attempt") == 1
    assert _total(worker["jobs_deliveries"], channel="teams", outcome="sent") >= 1
    assert _total(scheduler["jobs_schedule_fires"], schedule="metrics-fire") >= 1
    assert _total(scheduler["jobs_schedule_skips"], schedule="metrics-paused") >= 1
    assert teams.cards("ops"), "no card reached the Teams webhook"


def _settled(scraped: dict[str, Any]) -> bool:
    """Every event above has shown up where it is counted."""
    gateway, worker, scheduler = scraped["gateway"], scraped["worker"], scraped["scheduler"]
    if not (gateway.keys() >= GATEWAY and worker.keys() >= WORKER):
        return False
    if not scheduler.keys() >= SCHEDULER:
        return False
    return bool(
        _total(worker["jobs_dead_runs"], task="fail_until_attempt")
        and _total(worker["jobs_runs"], task="record_webhook", status="succeeded")
        and _total(worker["jobs_deliveries"], channel="teams", outcome="sent")
        and _total(scheduler["jobs_schedule_skips"], schedule="metrics-paused")
    )
