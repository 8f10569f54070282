"""`jobsctl check`: every configuration problem on its own line, with its key path."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import pytest
from pydantic import ValidationError

from jobs_service.cli.config_check import Finding, check_settings, validation_findings
from jobs_service.cli.main import main
from jobs_service.core.settings import Settings
from jobs_service.core.summary import Summary, make_summary

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

DIGEST = "0" * 64
SECRETS = (
    "hunter2-db-password",
    "whsec_YmlsbGluZy1zZWNyZXQtMDEyMw==",  # a Standard Webhooks secret: whsec_ + base64
    "domain-client-secret-4567",
    "graph-client-secret-89ab",
    "refresh-token-cdef",
    "teams-hook-signature-1357",
)
DEV_DATABASE = "database=sqlite+aiosqlite:///./var/jobs.db"


@dataclass(frozen=True)
class Outcome:
    code: int
    out: list[str]
    err: list[str]

    @property
    def text(self) -> str:
        return "\n".join([*self.out, *self.err])


class Run(Protocol):
    def __call__(
        self, toml: str | bytes, command: str = "check", name: str = "jobs.toml"
    ) -> Outcome: ...


@pytest.fixture
def jobsctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    """Write the TOML to a file and run `jobsctl --config FILE <command>` in this process."""
    # main() exports the file for child processes; monkeypatch undoes that after the test.
    monkeypatch.setenv("JOBS_CONFIG_FILE", str(tmp_path / "unset.toml"))

    def run(toml: str | bytes, command: str = "check", name: str = "jobs.toml") -> Outcome:
        path = tmp_path / name
        if isinstance(toml, bytes):
            path.write_bytes(toml)
        else:
            path.write_text(textwrap.dedent(toml))
        code = main(["--config", str(path), command])
        captured = capsys.readouterr()
        return Outcome(code, captured.out.splitlines(), captured.err.splitlines())

    return run


def registered_count() -> int:
    from jobs_service.cli.context import shared_broker  # noqa: PLC0415
    from jobs_service.tasks.registry import list_tasks  # noqa: PLC0415

    return len(list_tasks(shared_broker()))


def summary(**lines: str) -> list[str]:
    """The summary `check` prints, with the given rows replaced."""
    rows = {
        "settings": f"env=development {DEV_DATABASE} broker=in-memory",
        "tasks": f"{registered_count()} registered (modules: tests.support.sample_tasks)",
        "api_keys": "0",
        "webhooks": "none",
        "domain_api": "not configured (jobs that call it fail)",
        "graph": "not configured",
        "channels": "none",
    } | lines
    return [f"{label.replace('_', ' '):<10} {value}" for label, value in rows.items()]


COMPLETE = f"""
    [[api_keys]]
    name = "ops"
    sha256 = "{DIGEST}"
    scopes = ["read"]

    [webhooks.sources.billing]
    scheme = "standard"
    secrets = ["{SECRETS[1]}"]
    default_task = "record_webhook"
    routes = {{ "invoice.paid" = "record_webhook", refund = {{ task = "process_webhook_event" }} }}

    [webhooks.sources.github]
    scheme = "none"
    default_task = "record_webhook"

    [domain_api]
    base_url = "https://domain.example.com"
    token_url = "https://idp.example.com/token"
    client_id = "jobs"
    client_secret = "{SECRETS[2]}"

    [graph]
    tenant_id = "contoso"
    client_id = "jobs-app"
    client_secret = "{SECRETS[3]}"
    sender = "jobs@example.com"
    delegated_refresh_token = "{SECRETS[4]}"

    [channels.teams.sales]
    webhook_url = "https://hook.example.com/{SECRETS[5]}"

    [channels.teams.ops]
    team_id = "team-1"
    channel_id = "channel-1"
"""


def test_a_complete_configuration_prints_what_is_set_up_and_passes(jobsctl: Run) -> None:
    """Everything configured: the summary names each part, nothing is reported, exit 0."""
    result = jobsctl(COMPLETE)
    assert result.err == []
    assert result.code == 0
    assert result.out == summary(
        api_keys="1",
        webhooks="2 sources (billing, github)",
        domain_api="configured",
        graph="configured",
        channels="teams: ops, sales",
    )
    assert not any(secret in result.text for secret in SECRETS)


def test_every_validation_error_is_one_line_with_its_key_path(jobsctl: Run) -> None:
    """A file with many mistakes gets all of them, in file order, and exit code 1."""
    result = jobsctl(f"""
        database_url = "mysql://jobs:{SECRETS[0]}@db/jobs"

        [[api_keys]]
        name = "ops"
        sha256 = "{SECRETS[2]}"
        scopes = ["read"]

        [webhooks.sources.billing]
        scheme = "standard"
        secrets = "{SECRETS[1]}"

        [domain_api]
        base_url = "ftp://domain.example.com"
        retries = "several"

        [channels.teams.sales]
        webhook_url = "ftp://hook.example.com/{SECRETS[5]}"
    """)
    assert result.code == 1
    assert result.out == []
    assert result.err == [
        "jobsctl check: configuration is invalid (6 problems)",
        "problem: database_url: must start with postgresql+asyncpg:// or sqlite+aiosqlite://",
        "problem: api_keys.0.sha256: must be 64 lowercase hex digits "
        "(the SHA-256 of the key, not the key)",
        "problem: webhooks.sources.billing.secrets: Input should be a valid list",
        "problem: domain_api.base_url: must be an http:// or https:// URL",
        "problem: domain_api.retries: Input should be a valid integer, "
        "unable to parse string as an integer",
        "problem: channels.teams.sales: must be an http:// or https:// URL",
    ]
    assert not any(secret in result.text for secret in SECRETS)


INVALID_AND_UNSAFE = f"""
    env = "production"

    [[api_keys]]
    name = "ops"
    sha256 = "{DIGEST}"
    scopes = ["admin"]

    [webhooks.sources."bad/name"]
    scheme = "github"
    secrets = ["{SECRETS[1]}"]
    default_task = "record_webhook"

    [webhooks.sources.open]
    scheme = "none"
    default_task = "record_webhook"

    [webhooks.sources.teams]
    scheme = "teams"
    secrets = ["not base64!"]
    default_task = "record_webhook"
"""


def test_a_key_that_fails_validation_does_not_hide_the_other_problems(jobsctl: Run) -> None:
    """A bad source name stopped the check: the unsigned source in production and the
    Teams token that does not decode were found only once it was fixed. The rest of the
    configuration is checked with the failing key taken out."""
    result = jobsctl(INVALID_AND_UNSAFE)
    assert result.code == 1
    assert result.out == []
    assert result.err == [
        "jobsctl check: configuration is invalid (3 problems)",
        'problem: webhooks.sources."bad/name": not a source name: 1 to 100 letters, digits, '
        "'.', '_', '~' and '-', starting with a letter or digit (it is the path segment of "
        "POST /webhooks/<name>)",
        "problem: webhooks.sources.open.scheme: 'none' accepts unsigned calls from anyone; "
        "not allowed in production",
        "problem: webhooks.sources.teams: security token #1 for scheme 'teams' is empty or "
        "not valid base64",
    ]
    assert SECRETS[1] not in result.text


def test_the_gateway_still_refuses_a_bad_source_name_in_one_line(jobsctl: Run) -> None:
    """Other commands, the gateway's included, stop at the invalid key (exit code 2)."""
    result = jobsctl(INVALID_AND_UNSAFE, command="api")
    assert result.code == 2
    assert result.err == [
        'jobsctl api: configuration error: webhooks.sources."bad/name": not a source name: '
        "1 to 100 letters, digits, '.', '_', '~' and '-', starting with a letter or digit (it "
        "is the path segment of POST /webhooks/<name>)"
    ]


def test_rules_say_nothing_about_a_key_that_failed_validation(jobsctl: Run) -> None:
    """Taken out, the only API key leaves production without keys, and the half-set
    [domain_api] without its base_url: those would be about the stand-in, not the file.
    What the rules find elsewhere is still reported, warnings after problems."""
    result = jobsctl(f"""
        env = "production"

        [[api_keys]]
        name = "ops"
        sha256 = "{SECRETS[2]}"
        scopes = ["read"]

        [domain_api]
        base_url = "ftp://domain.example.com"
        client_id = "jobs"

        [graph]
        client_id = "jobs-app"

        [webhooks.sources.partner]
        scheme = "none"
        default_task = "record_webhook"
    """)
    assert result.code == 1
    assert result.err == [
        "jobsctl check: configuration is invalid (3 problems)",
        "problem: api_keys.0.sha256: must be 64 lowercase hex digits "
        "(the SHA-256 of the key, not the key)",
        "problem: domain_api.base_url: must be an http:// or https:// URL",
        "problem: webhooks.sources.partner.scheme: 'none' accepts unsigned calls from anyone; "
        "not allowed in production",
        "warning: graph: tenant_id (or token_url), client_secret, sender not set; the jobs "
        "that use Graph will fail",
    ]


def test_a_teams_webhook_url_over_plain_http_to_another_host_is_refused(jobsctl: Run) -> None:
    """A Workflows URL carries the signature that lets anyone post to the channel: over
    plain http:// it crossed the network in clear text, unnoticed (Graph's URLs are
    held to https). Only loopback, for a test server, may use http://."""
    result = jobsctl(f"""
        [channels.teams.sales]
        webhook_url = "http://hook.example.com/workflows/s?sig={SECRETS[5]}"

        [channels.teams.local]
        webhook_url = "http://127.0.0.1:8080/workflows/l?sig={SECRETS[4]}"
    """)
    assert result.code == 1
    assert result.err == [
        "jobsctl check: configuration is invalid (1 problem)",
        "problem: channels.teams.sales: webhook_url must be https://: its signature would "
        "cross the network in clear text (plain http:// is only for a test server on "
        "loopback)",
    ]
    assert not any(secret in result.text for secret in SECRETS)


def test_other_commands_stop_at_the_first_error(jobsctl: Run) -> None:
    """Only `check` lists everything; other commands keep one line and exit code 2."""
    result = jobsctl(
        f"""
        database_url = "mysql://jobs:{SECRETS[0]}@db/jobs"
        redis_url = "http://redis"
    """,
        command="tasks",
    )
    assert result.code == 2
    assert result.out == []
    assert result.err == [
        "jobsctl tasks: configuration error: database_url: must start with "
        "postgresql+asyncpg:// or sqlite+aiosqlite:// (and 1 more)"
    ]
    assert SECRETS[0] not in result.text


def test_a_key_path_in_a_validator_message_is_not_repeated(jobsctl: Run) -> None:
    """Whole-settings validators name the key themselves; it is printed once, as the path."""
    key = f'name = "ops"\nsha256 = "{DIGEST}"\nscopes = ["read"]\n'
    result = jobsctl(f"[[api_keys]]\n{key}\n[[api_keys]]\n{key}")
    assert result.code == 1
    assert result.err == [
        "jobsctl check: configuration is invalid (1 problem)",
        "problem: api_keys: duplicate name(s) ops",
    ]


def test_a_route_reports_the_form_the_author_meant(jobsctl: Run) -> None:
    """A route is a task name or a table: a bad table is reported as a table, by key only."""
    result = jobsctl(f"""
        [webhooks.sources.billing]
        scheme = "standard"
        secrets = ["{SECRETS[1]}"]
        routes.refund = {{ action = "refund" }}
        routes."invoice.paid" = 5
        routes.dispute = {{ task = "count_items", deliver_to = {{ email = "ops" }} }}
    """)
    assert result.code == 1
    assert result.err == [
        "jobsctl check: configuration is invalid (3 problems)",
        "problem: webhooks.sources.billing.routes.refund.task: Field required",
        'problem: webhooks.sources.billing.routes."invoice.paid": Input should be a valid '
        "string; or Input should be a valid dictionary or instance of WebhookRoute",
        "problem: webhooks.sources.billing.routes.dispute.deliver_to.email: Input should be "
        "a valid list; or Input should be a valid dictionary or instance of EmailTarget",
    ]


@pytest.mark.parametrize("command", ["check", "tasks"])
def test_a_toml_syntax_error_names_file_line_and_column(jobsctl: Run, command: str) -> None:
    """A broken file is one line an editor can jump to; `check` fails it with 1, others 2."""
    result = jobsctl(
        '[graph]\nclient_secret = "x"\n[webhooks.sources.billing\nscheme = "none"\n',
        command=command,
        name="broken.toml",
    )
    assert result.code == (1 if command == "check" else 2)
    assert len(result.err) == 1
    assert result.err[0].startswith(f"jobsctl {command}: configuration error: ")
    assert result.err[0].endswith(
        "broken.toml:3:26: invalid TOML: Expected ']' at the end of a table declaration"
    )


def test_a_file_that_is_not_utf8_names_the_position(jobsctl: Run) -> None:
    """A stray byte is located like a syntax error, without echoing the bytes."""
    result = jobsctl(b'env = "test"\nclient = \xff\n', name="latin.toml")
    assert result.code == 1
    assert len(result.err) == 1
    assert result.err[0].endswith("latin.toml:2:10: invalid TOML: not UTF-8 text")


def test_a_missing_config_file_stays_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Naming a file that is not there is a usage error: one line, exit code 2."""
    monkeypatch.setenv("JOBS_CONFIG_FILE", str(tmp_path / "none.toml"))
    code = main(["--config", str(tmp_path / "none.toml"), "check"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert len(err) == 1
    assert err[0].endswith("does not exist (named by --config or JOBS_CONFIG_FILE)")


def test_config_file_inside_the_config_file_is_refused(jobsctl: Run) -> None:
    """It could only be ignored (the file is chosen before it is read): say so."""
    result = jobsctl('config_file = "other.toml"\n')
    assert result.code == 2
    assert result.err[-1].endswith(
        "config_file cannot be set inside the config file; name the file with --config or "
        "JOBS_CONFIG_FILE"
    )


def test_routes_to_unregistered_tasks_are_problems(jobsctl: Run) -> None:
    """Each route and default task must name a registered task that can be called with
    ``event_id`` alone (as every webhook run is); close names are suggested."""
    result = jobsctl(f"""
        [webhooks.sources.billing]
        scheme = "standard"
        secrets = ["{SECRETS[1]}"]
        default_task = "record_webhooks"
        routes."invoice.paid" = "count_items"
        routes."invoice.void" = "count_itemz"
        routes.refund = {{ task = "refund_invoice" }}
    """)
    assert result.code == 1
    assert result.out == summary(webhooks="1 source (billing)")
    assert result.err == [
        "problem: webhooks.sources.billing.routes.\"invoice.paid\": task 'count_items' cannot "
        "take a webhook event (invalid kwargs for count_items: items: Field required)",
        "problem: webhooks.sources.billing.routes.\"invoice.void\": task 'count_itemz' is not "
        "registered (did you mean 'count_items'?)",
        "problem: webhooks.sources.billing.routes.refund: task 'refund_invoice' is not registered",
        "problem: webhooks.sources.billing.default_task: task 'record_webhooks' is not "
        "registered (did you mean 'record_webhook'?)",
    ]


def test_a_source_without_default_task_needs_the_implicit_handler(
    make_settings: Callable[..., Settings],
) -> None:
    """Unrouted events go to process_webhook_event, so it must exist unless default_task is set."""
    sources = {
        "github": {"scheme": "github", "secrets": ["x"]},
        "billing": {"scheme": "github", "secrets": ["x"], "default_task": "record_webhook"},
    }
    settings = make_settings(webhooks={"sources": sources})
    assert check_settings(settings, ["record_webhook"]) == [
        Finding(
            "problem",
            "webhooks.sources.github",
            "events without a route go to 'process_webhook_event', which is not registered; "
            "set default_task",
        )
    ]
    assert check_settings(settings, ["record_webhook", "process_webhook_event"]) == []


@pytest.mark.parametrize(
    ("table", "status", "missing"),
    [
        ('token_url = "https://idp.example.com/t"', "base_url, client_id, client_secret", True),
        (
            'base_url = "https://d.example.com"\nclient_id = "jobs"\n'
            f'client_secret = "{SECRETS[2]}"',
            "token_url",
            True,
        ),
        ('scope = "api://domain/.default"', "base_url, token_url, client_id, client_secret", True),
        ('base_url = "https://d.example.com"', "", False),
    ],
)
def test_a_partial_domain_api_is_a_problem_naming_the_missing_keys(
    jobsctl: Run, table: str, status: str, missing: bool
) -> None:
    """Half a [domain_api] would fail every call; base_url alone (no OAuth2) is complete."""
    result = jobsctl(f"[domain_api]\n{table}\n")
    expected = f"incomplete (missing: {status})" if missing else "configured"
    assert result.out == summary(domain_api=expected)
    if missing:
        assert result.err == [f"problem: domain_api: {status} not set; every call would fail"]
        assert result.code == 1
    else:
        assert result.err == []
        assert result.code == 0
    assert SECRETS[2] not in result.text


def test_a_partial_graph_is_only_a_warning(jobsctl: Run) -> None:
    """The worker starts with half a [graph]; only the jobs that use Graph will fail."""
    result = jobsctl(
        f'[graph]\ntoken_url = "https://idp.example.com/t"\nclient_secret = "{SECRETS[3]}"\n'
    )
    assert result.code == 0
    assert result.out == summary(graph="incomplete (missing: client_id, sender)")
    assert result.err == [
        "warning: graph: client_id, sender not set; the jobs that use Graph will fail"
    ]
    assert SECRETS[3] not in result.text


def test_a_graph_teams_channel_needs_the_delegated_token(jobsctl: Run) -> None:
    """A channel posted through Graph cannot work without the user's refresh token."""
    result = jobsctl(f"""
        [graph]
        tenant_id = "contoso"
        client_id = "jobs-app"
        client_secret = "{SECRETS[3]}"
        sender = "jobs@example.com"

        [channels.teams.ops]
        team_id = "team-1"
        channel_id = "channel-1"

        [channels.teams.sales]
        webhook_url = "https://hook.example.com/{SECRETS[5]}"
    """)
    assert result.code == 1
    assert result.out == summary(graph="configured", channels="teams: ops, sales")
    assert result.err == [
        "problem: channels.teams.ops: posts through Graph (team_id, channel_id) but "
        "graph.delegated_refresh_token not set",
    ]


def test_production_refuses_unsigned_webhooks_and_warns_about_plain_http(jobsctl: Run) -> None:
    """In production an unsigned source is a problem; clear-text URLs off this host warn."""
    result = jobsctl(f"""
        env = "production"

        [[api_keys]]
        name = "ops"
        sha256 = "{DIGEST}"
        scopes = ["admin"]

        [webhooks.sources.partner]
        scheme = "none"
        default_task = "record_webhook"

        [domain_api]
        base_url = "http://127.0.0.1:9000"
        token_url = "http://idp.internal.example.com/token"
        client_id = "jobs"
        client_secret = "{SECRETS[2]}"
    """)
    assert result.code == 1
    assert result.err == [
        "problem: webhooks.sources.partner.scheme: 'none' accepts unsigned calls from anyone; "
        "not allowed in production",
        "warning: domain_api.token_url: plain http:// to a non-loopback host in production; "
        "use https://",
    ]


def test_production_without_api_keys_is_a_problem(jobsctl: Run) -> None:
    """The gateway refuses to start in production without keys, so check says so first."""
    result = jobsctl('env = "production"\n')
    assert result.code == 1
    assert result.out[0] == f"settings   env=production {DEV_DATABASE} broker=in-memory"
    assert result.err == ["problem: api_keys: production needs at least one [[api_keys]] entry"]


def test_task_names_must_be_verb_noun(make_settings: Callable[..., Settings]) -> None:
    """A registered task outside the naming rule fails the check; problems sort first."""
    settings = make_settings(graph={"client_id": "jobs-app"})
    findings = check_settings(settings, ["count_items", "Report", "record_webhook"])
    assert findings == [
        Finding("problem", "task_modules", "task 'Report' is not named verb_noun"),
        Finding(
            "warning",
            "graph",
            "tenant_id (or token_url), client_secret, sender not set; "
            "the jobs that use Graph will fail",
        ),
    ]


async def _sync_account(account: str) -> Summary:
    """A task that cannot run without an argument."""
    del account
    return make_summary()


def test_schedule_labels_that_cannot_work_are_problems(jobsctl: Run) -> None:
    """A label cron or zone the scheduler would leave out, and a label on a task with
    required arguments (every fire would be skipped), fail the check by name; the
    scheduler would only log them when it starts."""
    from jobs_service.broker import broker  # noqa: PLC0415

    broker.register_task(_sync_account, "sync_account", schedule=["*/5 * * * *", "0 25 * * *"])
    broker.register_task(
        _sync_account, "sync_local_account", schedule="0 9 * * *", timezone="UTC+2"
    )
    try:
        result = jobsctl("")
    finally:
        broker.local_task_registry.pop("sync_account", None)
        broker.local_task_registry.pop("sync_local_account", None)
    assert result.code == 1
    assert result.err == [
        "problem: task_modules: task 'sync_account': schedule label '0 25 * * *': "
        "cron '0 25 * * *': hour 25 is out of range 0-23",
        "problem: task_modules: task 'sync_account': schedule label fires with no "
        "arguments, but invalid kwargs for sync_account: account: Field required",
        "problem: task_modules: task 'sync_local_account': schedule label '0 9 * * *': "
        "unknown timezone 'UTC+2' (use an IANA name such as Europe/Berlin)",
        "problem: task_modules: task 'sync_local_account': schedule label fires with no "
        "arguments, but invalid kwargs for sync_local_account: account: Field required",
    ]


def test_environment_errors_get_the_same_key_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad JOBS_* variable is located like a bad file key, by its nested path."""
    monkeypatch.setenv("JOBS_GRAPH__TIMEOUT_S", "-1")
    with pytest.raises(ValidationError) as caught:
        Settings.load()
    assert [str(finding) for finding in validation_findings(caught.value)] == [
        "problem: graph.timeout_s: Input should be greater than 0"
    ]


def test_a_misspelt_environment_variable_is_a_warning_with_the_setting_meant(
    jobsctl: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``JOBS_ENVIRONMENT=production`` names no setting, so the service would run in
    development without a word: check warns (exit 0, it starts), naming the setting
    closest to each, and leaves Kubernetes' service-link variables alone."""
    monkeypatch.setenv("JOBS_ENVIRONMENT", "production")
    monkeypatch.setenv("JOBS_WORKR__CONCURRENCY", "8")
    monkeypatch.setenv("JOBS_NOTHING_LIKE_IT", "1")
    monkeypatch.setenv("JOBS_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("JOBS_PORT_8000_TCP", "tcp://10.0.0.1:8000")
    monkeypatch.setenv("JOBS_API_SERVICE_HOST", "10.0.0.2")  # a Service named jobs-api
    monkeypatch.setenv("JOBS_API_PORT", "tcp://10.0.0.2:8000")
    monkeypatch.setenv("JOBS_API_PORT_8000_TCP_ADDR", "10.0.0.2")
    result = jobsctl(COMPLETE)
    assert result.code == 0
    assert result.err == [
        "warning: JOBS_ENVIRONMENT: names no setting and is ignored (did you mean JOBS_ENV?)",
        "warning: JOBS_NOTHING_LIKE_IT: names no setting and is ignored",
        "warning: JOBS_WORKR__CONCURRENCY: names no setting and is ignored "
        "(did you mean JOBS_WORKER__CONCURRENCY?)",
    ]


def test_other_commands_log_one_warning_for_unknown_variables(
    jobsctl: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any other command starts as before and logs the ignored variables once."""
    monkeypatch.setenv("JOBS_DATABSE_URL", "postgresql://elsewhere/jobs")
    result = jobsctl(COMPLETE, command="tasks")
    logged = result.text
    assert result.code == 0
    assert logged.count("settings-unknown-environment") == 1
    assert "JOBS_DATABASE_URL" in logged


def test_an_event_id_from_an_unsigned_header_is_a_warning(jobsctl: Run) -> None:
    """The signature of these schemes covers the body only: an id taken from another
    header lets one captured delivery come back as new events. Standard Webhooks signs
    its webhook-id, so reading the id there is fine."""
    result = jobsctl(f"""
        [webhooks.sources.shop]
        scheme = "hmac-sha256"
        secrets = ["{SECRETS[1]}"]
        signature_header = "X-Signature"
        event_id = "header:X-Event-Id"
        default_task = "record_webhook"

        [webhooks.sources.billing]
        scheme = "standard"
        secrets = ["{SECRETS[1]}"]
        event_id = "header:webhook-id"
        default_task = "record_webhook"
    """)
    assert result.code == 0
    assert result.err == [
        "warning: webhooks.sources.shop.event_id: the hmac-sha256 signature does not cover "
        "x-event-id: a captured delivery sent again under new ids is a new event each "
        "time; read the id from the signed body (json:<pointer>) or leave event_id unset",
    ]
