"""A schedule made through the API asks the domain and delivers to Teams and Outlook.

Production topology (gateway, worker and scheduler processes on PostgreSQL and Redis);
the outside world is real HTTP servers on 127.0.0.1: a token endpoint, the domain
application, Microsoft Graph and a Teams Workflows webhook.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from tests.support.fakes.domain import FakeDomainApi
from tests.support.fakes.graph import FakeGraph
from tests.support.fakes.server import serve
from tests.support.fakes.teams import FakeTeamsWorkflows
from tests.support.fakes.tokens import FakeTokenEndpoint
from tests.support.processes import free_port, jobsctl, started, wait_for_http
from tests.support.services import redis_url

if TYPE_CHECKING:
    from pathlib import Path

OPERATOR = "e2e-agents-operator"
SENDER = "jobs@contoso.example"


def _config(path: Path, urls: dict[str, str], tokens: FakeTokenEndpoint, teams_url: str) -> Path:
    digest = hashlib.sha256(OPERATOR.encode()).hexdigest()
    path.write_text(
        f"""
[[api_keys]]
name = "operator"
sha256 = "{digest}"
scopes = ["read", "operate"]

[domain_api]
base_url = "{urls["domain"]}"
token_url = "{urls["token"]}"
client_id = "{tokens.client_id}"
client_secret = "{tokens.client_secret}"
scope = "jobs"

[graph]
tenant_id = "contoso"
token_url = "{urls["token"]}"
client_id = "{tokens.client_id}"
client_secret = "{tokens.client_secret}"
base_url = "{urls["graph"]}/v1.0"
sender = "{SENDER}"

[channels.teams.sales]
webhook_url = "{teams_url}"
"""
    )
    return path


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {OPERATOR}"}


def _wait_for_run(api: str, schedule_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = httpx.get(
            f"{api}/v1/runs", params={"schedule_id": schedule_id}, headers=_auth(), timeout=5
        ).json()["items"]
        if runs and runs[0]["status"] in ("succeeded", "failed", "dead"):
            detail = httpx.get(f"{api}/v1/runs/{runs[0]['run_id']}", headers=_auth(), timeout=5)
            return dict(detail.json())
        time.sleep(0.2)
    raise AssertionError(f"the scheduled run did not finish: {runs}")


def test_a_scheduled_agent_task_delivers_once_despite_a_retry(
    tmp_path: Path, pg_url: str, redis_prefix: str
) -> None:
    tokens = FakeTokenEndpoint()
    domain = FakeDomainApi(tokens=tokens)
    domain.answers["agents/kpi"] = {
        "summary": {"processed": 12, "errors": 0},
        "content": "## Weekly KPIs\n\n| metric | value |\n|---|---|\n| signups | 12 |",
    }
    graph = FakeGraph(valid_token=tokens.valid)
    teams = FakeTeamsWorkflows()
    teams.failures = [503]  # the first Teams post fails: the run is retried
    with (
        serve(tokens.app) as token_base,
        serve(domain.app) as domain_base,
        serve(graph.app) as graph_base,
        serve(teams.app) as teams_base,
    ):
        urls = {"token": f"{token_base}/token", "domain": domain_base, "graph": graph_base}
        config = _config(tmp_path / "jobs.toml", urls, tokens, teams.url(teams_base, "sales"))
        env = {
            "JOBS_DATABASE_URL": pg_url,
            "JOBS_REDIS_URL": redis_url(),
            "JOBS_REDIS_PREFIX": f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
            "JOBS_CONFIG_FILE": str(config),
            "JOBS_ENV": "production",
            "JOBS_WORKER__RETRY_BACKOFF_S": "0.5",
        }
        assert jobsctl("migrate", env=env).returncode == 0
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        with (
            started("api", "--port", str(port), env=env, log=tmp_path / "api.log") as gateway,
            started("worker", "--processes", "1", env=env, log=tmp_path / "worker.log"),
            started("scheduler", env=env, log=tmp_path / "scheduler.log"),
        ):
            wait_for_http(f"{api}/ready", process=gateway, log=tmp_path / "api.log")
            at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
            created = httpx.post(
                f"{api}/v1/schedules",
                json={
                    "name": "weekly-kpi",
                    "task": "run_agent_task",
                    "kwargs": {"agent": "kpi", "message": "weekly report"},
                    "schedule": {"type": "once", "at": at},
                    "deliver_to": {
                        "teams_channel": "sales",
                        "email": {"to": ["ops@contoso.example"], "cc": ["cfo@contoso.example"]},
                    },
                },
                headers=_auth(),
                timeout=5,
            )
            assert created.status_code == 201, created.text
            run = _wait_for_run(api, created.json()["id"])
            refused = httpx.post(
                f"{api}/v1/schedules",
                json={
                    "name": "nowhere",
                    "task": "run_agent_task",
                    "kwargs": {"agent": "kpi"},
                    "schedule": {"type": "once", "at": at},
                    "deliver_to": {"teams_channel": "marketing"},
                },
                headers=_auth(),
                timeout=5,
            )

    assert run["status"] == "succeeded", run
    assert run["attempt"] == 2
    assert run["summary"] == {"processed": 12, "delivered": 2, "errors": 0}
    assert run["content"].startswith("## Weekly KPIs")
    deliveries = {(d["channel"], d["status"], d["attempts"]) for d in run["deliveries"]}
    assert deliveries == {("teams", "sent", 2), ("email", "sent", 1)}
    # The domain was asked twice (one per attempt) with the same idempotency key.
    calls = domain.calls_of("agents/kpi")
    assert [c.idempotency_key for c in calls] == [run["run_id"], run["run_id"]]
    assert calls[0].body["payload"] == {"message": "weekly report"}
    # Exactly one card and one email, although the run ran twice.
    [card] = teams.cards("sales")
    assert card["body"][0]["text"] == "kpi: weekly report"
    [mail] = graph.sent_mail
    message = mail["message"]
    assert [r["emailAddress"]["address"] for r in message["toRecipients"]] == [
        "ops@contoso.example"
    ]
    assert [r["emailAddress"]["address"] for r in message["ccRecipients"]] == [
        "cfo@contoso.example"
    ]
    assert message["body"]["contentType"].lower() == "html"
    assert "<table>" in message["body"]["content"]
    assert graph.requests_to("/sendMail")[0].path == f"/v1.0/users/{SENDER}/sendMail"
    assert tokens.grants("client_credentials") >= 1
    assert refused.status_code == 422
    assert "marketing" in refused.text
