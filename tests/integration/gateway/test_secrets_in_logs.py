"""Secrets never reach the logs, the answers, the run history or the webhook inbox.

The gateway runs as a real `jobsctl api` process (PostgreSQL; the in-memory broker, so
jobs run in the same process and their failures land in the same log) with a
configuration full of secrets: API keys, webhook signing secrets, a Graph clientState,
the OAuth client secrets of the domain API and of Graph, a Graph refresh token, a Teams
Workflows URL with its ``sig=`` and a database password. Good and bad keys, webhooks
with bad signatures, a job whose Graph secret is refused and whose Teams post cannot
connect, and configuration errors all leave traces; none may contain a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support.fakes.domain import FakeDomainApi
from tests.support.fakes.server import serve
from tests.support.fakes.tokens import FakeTokenEndpoint
from tests.support.processes import free_port, jobsctl, started, wait_for_http
from tests.support.services import redis_url

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

OPERATOR_KEY = "op-key-9f2c7e1d5a"
ADMIN_KEY = "admin-key-4b8a0c6e2f"
GUESSED_KEY = "guessed-key-7c1e3b9d"  # presented, never configured: must not be logged either
SIGNING_KEY = b"billing-signing-key-5e0d9a2c7b41"
WHSEC = "whsec_" + base64.b64encode(SIGNING_KEY).decode()
GH_SECRET = "gh-hook-secret-5d1f8e2a"
GRAPH_STATE = "graph-client-state-8e2a4c1f"
DOMAIN_SECRET = "domain-client-secret-3c9b7d2e"
GRAPH_SECRET = "graph-client-secret-6a4d0e8b"
REFRESH_TOKEN = "graph-refresh-token-2b7e5f9c"
TEAMS_SIG = "teams-sig-1f8c3a6d0b"
PG_PASSWORD = "pg-password-0d3e7a1c"

SECRETS = {
    "operator key": OPERATOR_KEY,
    "admin key": ADMIN_KEY,
    "guessed key": GUESSED_KEY,
    "standard webhook secret": WHSEC,
    "standard webhook key": base64.b64encode(SIGNING_KEY).decode(),
    "github secret": GH_SECRET,
    "graph clientState": GRAPH_STATE,
    "domain_api client_secret": DOMAIN_SECRET,
    "graph client_secret": GRAPH_SECRET,
    "graph refresh token": REFRESH_TOKEN,
    "teams sig": TEAMS_SIG,
    "database password": PG_PASSWORD,
}


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _config(urls: dict[str, str], *, teams_url: str, extra: str = "") -> str:
    return f"""
[[api_keys]]
name = "operator"
sha256 = "{_digest(OPERATOR_KEY)}"
scopes = ["read", "operate"]

[[api_keys]]
name = "admin"
sha256 = "{_digest(ADMIN_KEY)}"
scopes = ["admin"]

[worker]
retry_backoff_s = 0.05
retry_backoff_max_s = 0.1

[webhooks.sources.billing]
scheme = "standard"
secrets = ["{WHSEC}"]
default_task = "record_webhook"

[webhooks.sources.gh]
scheme = "github"
secrets = ["{GH_SECRET}"]
default_task = "record_webhook"

[webhooks.sources.graph]
scheme = "graph"
secrets = ["{GRAPH_STATE}"]
default_task = "record_webhook"

[domain_api]
base_url = "{urls["domain"]}"
token_url = "{urls["token"]}"
client_id = "jobs-client"
client_secret = "{DOMAIN_SECRET}"

[graph]
tenant_id = "contoso"
token_url = "{urls["token"]}"
client_id = "jobs-client"
client_secret = "{GRAPH_SECRET}"
delegated_refresh_token = "{REFRESH_TOKEN}"
base_url = "{urls["domain"]}/v1.0"
sender = "jobs@contoso.example"

[channels.teams.ops]
webhook_url = "{teams_url}"
{extra}"""


def _leaks(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


def _standard(body: bytes, msg_id: str, key: bytes = SIGNING_KEY) -> dict[str, str]:
    ts = int(time.time())
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


def _github(body: bytes, secret: str) -> dict[str, str]:
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={mac}",
        "X-GitHub-Delivery": "delivery-1",
        "X-GitHub-Event": "push",
        "content-type": "application/json",
    }


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def outside() -> Iterator[dict[str, str]]:
    """The domain application and its token endpoint on loopback; the endpoint accepts
    the domain's client secret and refuses Graph's."""
    tokens = FakeTokenEndpoint(client_id="jobs-client", client_secret=DOMAIN_SECRET)
    domain = FakeDomainApi(tokens=tokens)
    with serve(tokens.app) as token_base, serve(domain.app) as domain_base:
        yield {"token": f"{token_base}/token", "domain": domain_base}


def _wait_finished(client: httpx.Client, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/v1/runs/{run_id}", headers=_auth(OPERATOR_KEY)).json()
        if body["status"] in ("succeeded", "failed", "dead", "cancelled"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish: {body}")


def _exercise(client: httpx.Client) -> list[httpx.Response]:
    """Good and bad keys, keys where they do not belong, webhooks good and bad, a job
    whose deliveries fail, and reads of everything that was recorded."""
    answers = [
        client.get("/v1/tasks", headers=_auth(OPERATOR_KEY)),
        client.get("/v1/runs", headers=_auth(GUESSED_KEY)),
        client.get("/v1/runs", headers={"Authorization": GUESSED_KEY}),
        client.get("/v1/audit", headers=_auth(OPERATOR_KEY)),
        client.get("/v1/tasks", params={"api_key": ADMIN_KEY}),
        client.get(
            "/v1/tasks",
            headers={
                "X-Api-Key": ADMIN_KEY,
                "Cookie": f"session={ADMIN_KEY}",
                "X-Token": TEAMS_SIG,
            },
        ),
        client.post(
            "/v1/tasks/count_items", json={"kwargs": {"items": 1}}, headers=_auth(OPERATOR_KEY)
        ),
    ]
    body = json.dumps({"type": "invoice.paid", "data": {"id": "in_1"}}).encode()
    answers += [
        client.post("/webhooks/billing", content=body, headers=_standard(body, "m1")),
        client.post(
            "/webhooks/billing", content=body, headers=_standard(body, "m2", key=b"w" * 32)
        ),
        client.post("/webhooks/gh", content=body, headers=_github(body, GH_SECRET)),
        client.post("/webhooks/gh", content=body, headers=_github(body, "not-the-secret")),
    ]
    notification = {"value": [{"clientState": "wrong-state", "changeType": "created"}]}
    answers.append(client.post("/webhooks/graph", json=notification))
    submitted = client.post(
        "/v1/tasks/run_agent_task",
        json={
            "kwargs": {
                "agent": "weekly",
                "message": "report",
                "deliver_to": {"teams_channel": "ops", "email": ["boss@contoso.example"]},
            }
        },
        headers=_auth(OPERATOR_KEY),
    )
    answers.append(submitted)
    run = _wait_finished(client, submitted.json()["run_id"])
    answers += [
        client.get(f"/v1/runs/{run['run_id']}", headers=_auth(OPERATOR_KEY)),
        client.get("/v1/runs", headers=_auth(OPERATOR_KEY)),
        client.get("/v1/webhooks/events", headers=_auth(OPERATOR_KEY)),
        client.get("/v1/audit", headers=_auth(ADMIN_KEY)),
    ]
    for event in answers[-2].json()["items"]:
        answers.append(
            client.get(f"/v1/webhooks/events/{event['id']}", headers=_auth(OPERATOR_KEY))
        )
    return answers


def test_no_secret_reaches_logs_answers_history_or_inbox(
    tmp_path: Path, empty_pg_url: str, redis_prefix: str, outside: dict[str, str]
) -> None:
    """Everything the processes wrote and every answer is free of every secret — and the
    requests did what they should, so the traces are there to be searched."""
    teams_url = f"http://127.0.0.1:{free_port()}/workflows/ops?api-version=1&sig={TEAMS_SIG}"
    config = tmp_path / "jobs.toml"
    config.write_text(_config(outside, teams_url=teams_url))
    port = free_port()
    env = {
        "JOBS_CONFIG_FILE": str(config),
        "JOBS_DATABASE_URL": empty_pg_url.replace("postgres@", f"postgres:{PG_PASSWORD}@", 1),
        "JOBS_REDIS_URL": redis_url(),
        "JOBS_REDIS_PREFIX": f"{redis_prefix}-secrets",
        "JOBS_TASK_MODULES": "tests.support.sample_tasks",
        "JOBS_LOG_LEVEL": "debug",
    }
    assert PG_PASSWORD in env["JOBS_DATABASE_URL"]
    migrated = jobsctl("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    with (
        started("api", "--port", str(port), env=env, log=log) as process,
        started("worker", "--processes", "1", env=env, log=worker_log),
    ):
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/health", process=process, log=log)
        with httpx.Client(base_url=base, timeout=10) as client:
            answers = _exercise(client)
    logs = [log.read_text(errors="replace"), worker_log.read_text(errors="replace")]
    output = "".join([migrated.stdout, migrated.stderr, *logs])
    statuses = [answer.status_code for answer in answers[:12]]
    assert statuses == [200, 401, 401, 403, 401, 401, 422, 202, 401, 202, 401, 401], statuses
    run = answers[13].json()
    assert run["deliveries"], run
    assert all(delivery["status"] == "failed" for delivery in run["deliveries"]), run
    assert '"webhook-rejected"' in output
    assert '"http-request"' in output
    assert "refused the credentials" in answers[13].text + output
    audit = [
        (e["actor"], e["action"], e["target"], e["outcome"]) for e in answers[16].json()["items"]
    ]
    assert audit == [
        ("operator", "POST /v1/tasks/{name}", "run_agent_task", 202),
        ("operator", "POST /v1/tasks/{name}", "count_items", 422),
    ]
    leaked = {
        f"{answer.request.method} {answer.request.url.path}": _leaks(answer.text)
        for answer in answers
        if _leaks(answer.text)
    }
    assert leaked == {}
    assert _leaks(output) == [], [line for line in output.splitlines() if _leaks(line)][:5]


@pytest.mark.parametrize(
    ("extra", "config_error"),
    [
        ("", None),
        ('\n[channels.teams.bad]\nwebhook_url = "ftp://x.example/run?sig={sig}"\n', "channels"),
        ('\n[api]\nhost = ["{sig}"]\n', "api.host"),
        ('\n[runs]\nretention_days = "{sig}"\n', "runs.retention_days"),
        ('\n[graph.extra]\nclient_secret = "{sig}\n', "invalid TOML"),
    ],
)
def test_configuration_errors_name_keys_never_values(
    tmp_path: Path, pg_url: str, outside: dict[str, str], extra: str, config_error: str | None
) -> None:
    """`jobsctl check` and `jobsctl api` on a good file, a wrong URL, values of the wrong
    type and broken TOML next to the secrets: the error names the key (or line), and no
    secret is printed."""
    teams_url = f"https://prod.example/workflows/ops?sig={TEAMS_SIG}"
    config = tmp_path / "jobs.toml"
    config.write_text(_config(outside, teams_url=teams_url, extra=extra.format(sig=TEAMS_SIG)))
    env = {
        "JOBS_CONFIG_FILE": str(config),
        "JOBS_DATABASE_URL": pg_url.replace("postgres@", f"postgres:{PG_PASSWORD}@", 1),
        "JOBS_TASK_MODULES": "tests.support.sample_tasks",
    }
    check = jobsctl("check", env=env, cwd=tmp_path)
    outputs = {"check": check.stdout + check.stderr}
    if config_error is None:
        assert check.returncode == 0, outputs["check"]
        assert "api keys   2" in check.stdout
    else:
        api = jobsctl("api", env=env, cwd=tmp_path)  # refuses before it would serve
        outputs["api"] = api.stdout + api.stderr
        assert check.returncode == 1, outputs["check"]
        assert config_error in check.stderr
        assert api.returncode == 2, outputs["api"]
        assert config_error in api.stderr
    assert {name: _leaks(text) for name, text in outputs.items()} == {key: [] for key in outputs}


def test_a_database_url_with_a_password_is_not_echoed_when_invalid(tmp_path: Path) -> None:
    """A wrong database URL in the environment is refused without repeating it."""
    env = {"JOBS_DATABASE_URL": f"mysql://root:{PG_PASSWORD}@db.example/jobs"}
    result = jobsctl("check", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "database_url" in result.stderr
    assert _leaks(result.stdout + result.stderr) == []


def test_the_inbox_does_not_show_a_graph_client_state(
    tmp_path: Path, empty_pg_url: str, redis_prefix: str, outside: dict[str, str]
) -> None:
    """An accepted Graph notification is stored and shown without its clientState."""
    teams_url = f"https://prod.example/workflows/ops?sig={TEAMS_SIG}"
    config = tmp_path / "jobs.toml"
    config.write_text(_config(outside, teams_url=teams_url))
    port = free_port()
    env = {
        "JOBS_CONFIG_FILE": str(config),
        "JOBS_DATABASE_URL": empty_pg_url,
        "JOBS_REDIS_URL": redis_url(),
        "JOBS_REDIS_PREFIX": f"{redis_prefix}-graph",
        "JOBS_TASK_MODULES": "tests.support.sample_tasks",
    }
    assert jobsctl("migrate", env=env, cwd=tmp_path).returncode == 0
    notification = {"value": [{"clientState": GRAPH_STATE, "changeType": "created"}]}
    log = tmp_path / "api.log"
    with started("api", "--port", str(port), env=env, log=log) as process:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/health", process=process, log=log)
        with httpx.Client(base_url=base, timeout=10) as client:
            accepted = client.post("/webhooks/graph", json=notification)
            event = client.get(
                f"/v1/webhooks/events/{accepted.json()['event_id']}", headers=_auth(OPERATOR_KEY)
            )
    assert accepted.status_code == 202
    assert event.json()["body"]["changeType"] == "created"
    assert _leaks(event.text) == []


def test_the_embedded_process_refuses_postgresql_without_showing_its_password(
    tmp_path: Path, empty_pg_url: str
) -> None:
    """`jobsctl run` is for an SQLite file: on PostgreSQL it stops in one line, which
    names the setting and not its value."""
    env = {
        "JOBS_DATABASE_URL": empty_pg_url.replace("postgres@", f"postgres:{PG_PASSWORD}@", 1),
        "JOBS_TASK_MODULES": "tests.support.sample_tasks",
    }
    result = jobsctl("run", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "JOBS_DATABASE_URL is not an SQLite database" in result.stderr
    assert _leaks(result.stdout + result.stderr) == []
