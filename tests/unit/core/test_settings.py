"""Settings: sources, precedence and validation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError

from jobs_service.core.errors import ConfigurationError
from jobs_service.core.settings import Settings, is_loopback_host

if TYPE_CHECKING:
    from pathlib import Path

KEY_SHA = "a" * 64


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_the_embedded_mode() -> None:
    """No configuration means SQLite under ./var and the in-memory broker."""
    settings = Settings.load()
    assert settings.embedded
    assert settings.database_url == "sqlite+aiosqlite:///./var/jobs.db"
    assert settings.api.host == "127.0.0.1"


def test_environment_overrides_file_and_nested_values_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JOBS_BROKER__XREAD_COUNT beats the file's [broker] but keeps its other keys."""
    config = write(tmp_path / "jobs.toml", "[broker]\nxread_count = 5\nresult_ttl_s = 7\n")
    monkeypatch.setenv("JOBS_BROKER__XREAD_COUNT", "20")
    settings = Settings.load(config_file=config)
    assert settings.broker.xread_count == 20
    assert settings.broker.result_ttl_s == 7


def test_the_unvalidated_input_loads_as_load_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``jobsctl check`` validates piece by piece is what ``load`` validates: the
    file's tables with the environment over them, key by key."""
    config = write(
        tmp_path / "jobs.toml",
        '[broker]\nxread_count = 5\nresult_ttl_s = 7\n[webhooks.sources.gh]\nscheme = "github"\n'
        'secrets = ["s"]\n',
    )
    monkeypatch.setenv("JOBS_CONFIG_FILE", str(config))
    monkeypatch.setenv("JOBS_BROKER__XREAD_COUNT", "20")
    monkeypatch.setenv("JOBS_TASK_MODULES", "myapp.jobs,myapp.reports")
    monkeypatch.setenv("JOBS_WEBHOOKS__SOURCES__GH__TOLERANCE_S", "60")
    given = Settings.unvalidated()
    assert given["broker"] == {"xread_count": "20", "result_ttl_s": 7}
    assert Settings.from_given(given) == Settings.load()
    monkeypatch.setenv("JOBS_BROKER__XREAD_COUNT", "1")  # read again by load, not from_given
    assert Settings.from_given(given).broker.xread_count == 20


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """JOBS_CONFIG_FILE names the TOML file, including [[api_keys]] tables."""
    config = write(
        tmp_path / "jobs.toml",
        f'[[api_keys]]\nname = "ops"\nsha256 = "{KEY_SHA}"\nscopes = ["read"]\n',
    )
    monkeypatch.setenv("JOBS_CONFIG_FILE", str(config))
    settings = Settings.load()
    assert [key.name for key in settings.api_keys] == ["ops"]
    assert settings.api_keys[0].grants("read")
    assert not settings.api_keys[0].grants("operate")


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    """A named file that does not exist is not silently ignored."""
    with pytest.raises(ConfigurationError, match="does not exist"):
        Settings.load(config_file=tmp_path / "nope.toml")


def test_task_modules_are_comma_separated_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JOBS_TASK_MODULES=a.b, c gives two module names."""
    monkeypatch.setenv("JOBS_TASK_MODULES", "myapp.jobs, myapp.reports ,")
    assert Settings.load().task_modules == ["myapp.jobs", "myapp.reports"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"database_url": "mysql://x"}, "postgresql"),
        ({"redis_url": "http://x"}, "redis://"),
        ({"api_keys": [{"name": "a", "sha256": "not-hex", "scopes": ["read"]}]}, "64"),
        ({"api_keys": [{"name": "a", "sha256": KEY_SHA, "scopes": ["root"]}]}, "scopes"),
        (
            {
                "api_keys": [
                    {"name": "a", "sha256": KEY_SHA, "scopes": ["read"]},
                    {"name": "a", "sha256": "b" * 64, "scopes": ["read"]},
                ]
            },
            "duplicate",
        ),
        ({"broker": {"xread_count": 0}}, "xread_count"),
        ({"broker": {"xread_cuont": 5}}, "xread_cuont"),
        (
            {
                "webhooks": {
                    "sources": {
                        "billing": {
                            "scheme": "none",
                            "routes": {
                                "invoice.paid": {
                                    "task": "process_webhook_event",
                                    "action": "Billing.Invoice",
                                }
                            },
                        }
                    }
                }
            },
            "WebhookRoute.action\n  String should match pattern",
        ),
        (
            {"webhooks": {"sources": {"Stripe": {"scheme": "none"}}}},
            "default domain action webhooks/Stripe",
        ),
        # Beyond a century the cleanup's cutoff is before year 1: it would fail nightly.
        ({"runs": {"retention_days": 1_000_000}}, "runs.retention_days\n  Input should be less"),
        ({"audit": {"retention_days": 0}}, "audit.retention_days\n  Input should be greater"),
    ],
)
def test_invalid_values_are_rejected_with_the_key(
    overrides: dict[str, object], message: str
) -> None:
    """Typos and bad values fail loudly, naming what is wrong."""
    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)  # type: ignore[arg-type]


def test_admin_scope_implies_the_others() -> None:
    """An admin key may read and operate."""
    settings = Settings(api_keys=[{"name": "root", "sha256": KEY_SHA, "scopes": ["admin"]}])  # type: ignore[list-item]
    assert settings.api_keys[0].grants("read")
    assert settings.api_keys[0].grants("operate")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104 - data, not a bind ("10.0.0.1", False), ("example.org", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    """Only loopback addresses count as local."""
    assert is_loopback_host(host) is loopback


def test_validation_errors_do_not_echo_secrets() -> None:
    """A wrong URL scheme is reported without repeating the URL and its password."""
    with pytest.raises(ValidationError) as caught:
        Settings(database_url="postgresql://jobs:S3cretPw@db/jobs")
    assert "S3cretPw" not in str(caught.value)
    assert "database_url" in str(caught.value)


def test_an_empty_redis_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    """JOBS_REDIS_URL= (set but empty) is the same as unset."""
    monkeypatch.setenv("JOBS_REDIS_URL", "")
    assert Settings.load().embedded
