"""Settings: one object, built at each entry point and passed down.

Sources, strongest first: keyword arguments, ``JOBS_*`` environment variables (nested
with ``__``, e.g. ``JOBS_BROKER__XREAD_COUNT=20``), then the TOML file named by
``JOBS_CONFIG_FILE``, then the defaults below. Nothing deeper in the code reads the
environment. Every field's description is the text the configuration reference shows.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from jobs_service.core.actions import ACTION_PATTERN, ActionName
from jobs_service.core.delivery import DeliverTo
from jobs_service.core.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_DATABASE_URL",
    "SOURCE_NAME_MAX",
    "ApiKey",
    "ApiSettings",
    "BrokerSettings",
    "ChannelSettings",
    "DatabaseSettings",
    "DomainApiSettings",
    "GraphSettings",
    "RunsSettings",
    "SchedulerSettings",
    "Scope",
    "Settings",
    "TeamsChannel",
    "WebhookRoute",
    "WebhookScheme",
    "WebhookSettings",
    "WebhookSource",
    "WorkerSettings",
    "is_loopback_host",
    "unknown_environment",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/jobs.db"
Scope = Literal["read", "operate", "admin"]
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_config_file_override: ContextVar[Path | None] = ContextVar("config_file", default=None)
#: Set by ``Settings.from_given``: its keyword arguments are the only source.
_given_only: ContextVar[bool] = ContextVar("given_only", default=False)


class _Section(BaseModel):
    """A nested settings table; unknown keys are errors so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class ApiKey(_Section):
    """One ``[[api_keys]]`` entry. Only the key's SHA-256 is stored, never the key."""

    name: str = Field(min_length=1, description="Who holds the key; shown in logs and audit.")
    sha256: str = Field(description="Lowercase hex SHA-256 of the key.")
    scopes: list[Scope] = Field(
        min_length=1, description="read, operate, admin; admin implies the others."
    )

    @field_validator("sha256")
    @classmethod
    def _check_sha256(cls, value: str) -> str:
        if not _SHA256_HEX.fullmatch(value):
            msg = "must be 64 lowercase hex digits (the SHA-256 of the key, not the key)"
            raise ValueError(msg)
        return value

    def grants(self, scope: Scope) -> bool:
        """True when this key may use ``scope``."""
        return "admin" in self.scopes or scope in self.scopes


class ApiSettings(_Section):
    """The HTTP gateway."""

    host: str = Field("127.0.0.1", description="Address `jobsctl api` and `jobsctl run` bind.")
    port: int = Field(8000, ge=1, le=65535, description="Port the gateway listens on.")
    request_log: bool = Field(True, description="Log one `http-request` line per request.")
    max_body_bytes: int = Field(
        1_048_576,
        ge=1,
        le=64 * 1_048_576,
        description="Largest request body of any endpoint but `/webhooks/*` (each webhook "
        "source has its own `max_body_bytes`); larger bodies are refused with 413.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins (`https://ops.example.com`) allowed to call the API "
        "across origins. Empty: no CORS headers at all.",
    )
    hsts: bool = Field(
        False,
        description="Send `Strict-Transport-Security`. Only when clients reach the gateway "
        "over HTTPS (TLS usually ends at a proxy, which may set it instead).",
    )
    events_poll_interval_ms: int = Field(
        500,
        ge=50,
        le=10_000,
        description="How often `GET /v1/runs/{run_id}/events` reads the watched runs (one "
        "query per gateway process for all the runs its clients watch).",
    )
    events_heartbeat_s: float = Field(
        15.0,
        gt=0,
        le=300,
        description="Longest silence on a run's event stream: a comment line is sent to "
        "keep proxies from closing it and to notice clients that left.",
    )
    events_retry_ms: int = Field(
        2000,
        ge=0,
        le=600_000,
        description="Reconnection delay the event stream asks clients for (`retry:`).",
    )

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        # What browsers send in Origin: scheme, host (a name or a bracketed IPv6), port.
        pattern = r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?"
        for index, origin in enumerate(value):
            if not re.fullmatch(pattern, origin):
                # Named by position, not echoed: a URL pasted here may carry a password.
                msg = (
                    f"entry {index} is not an origin: scheme://host[:port] without "
                    "credentials, a path or a trailing slash (no wildcards)"
                )
                raise ValueError(msg)
        return value


class BrokerSettings(_Section):
    """The Redis stream broker (used when ``redis_url`` is set)."""

    xread_count: int = Field(
        100,
        ge=1,
        le=1000,
        description="Most messages fetched per XREADGROUP. A worker never reads more than "
        "its free slots plus `worker.prefetch`, so a busy worker leaves work to others.",
    )
    xread_block_ms: int = Field(
        2000, ge=10, description="How long one XREADGROUP waits for new messages."
    )
    idle_timeout_s: float = Field(
        30.0,
        ge=1,
        description="A message whose worker stopped renewing its lease (every third of "
        "this) for this long is reclaimed by another worker: with reclaim_interval_s, "
        "the bound on re-running a killed worker's tasks. Long tasks are not affected: "
        "their lease is renewed while they run.",
    )
    reclaim_interval_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How often each worker looks for messages of dead workers, whether "
        "or not new work arrives.",
    )
    max_lease_s: float = Field(
        21_600.0,
        gt=0,
        description="A worker stops renewing a message it has held this long (a wedged "
        "task), so another worker re-runs it. Keep it above the longest task timeout.",
    )
    result_ttl_s: int = Field(
        86_400,
        ge=1,
        description="How long TaskIQ results stay in Redis: only for messages sent by "
        "plain `kiq()` or tasks labelled `store_result=True`; the outcome of every run is "
        "in the run history regardless.",
    )
    max_connections: int = Field(64, ge=2, description="Redis connection pool size per process.")
    sent_marker_ttl_s: int = Field(
        3600,
        ge=60,
        le=7 * 86_400,
        description="How long a run that may be sent more than once (a keyed submit, a "
        "schedule fire, an operator's retry, an outbox re-send) is remembered as sent, so "
        "that a send whose answer never came and the send that repeats it add its message "
        "once. A marker of about 100 bytes per such run; keep it above the longest "
        "Redis or PostgreSQL outage a re-send may follow.",
    )


class DatabaseSettings(_Section):
    """Connection pool of the run-history database."""

    pool_size: int = Field(10, ge=1, description="PostgreSQL connections kept open.")
    max_overflow: int = Field(10, ge=0, description="Extra PostgreSQL connections under load.")
    pool_timeout_s: float = Field(
        30.0,
        gt=0,
        description="How long a request waits for a free PostgreSQL connection of its "
        "process before it is answered 503 database-unavailable.",
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, description="Give up connecting after this; /ready reports the failure."
    )
    echo: bool = Field(False, description="Log every SQL statement (debugging only).")


class WorkerSettings(_Section):
    """Worker processes (`jobsctl worker`)."""

    processes: int = Field(1, ge=1, le=64, description="Worker processes per `jobsctl worker`.")
    concurrency: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Task functions one worker process runs at once. A slot frees when "
        "the function returns; logging, history and the acknowledgement follow without "
        "holding it.",
    )
    prefetch: int = Field(
        16,
        ge=0,
        le=10_000,
        description="Messages a worker reads ahead of its free slots, so a slot that "
        "frees starts its next task without waiting for Redis. They are held (their lease "
        "renewed) and on shutdown handed back; 0 reads only for free slots.",
    )
    shutdown_timeout_s: float = Field(
        30.0, gt=0, description="On SIGTERM, how long running tasks may take to finish."
    )
    metrics_port: int = Field(
        9464,
        ge=0,
        le=65535,
        description="Port on which `jobsctl worker` serves the Prometheus metrics of all "
        "its processes (runs by task and status, durations). 0: not served. A port in use "
        "is logged as `worker-metrics-unavailable` and the worker runs without it.",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address of the worker metrics endpoint; `0.0.0.0` to let a "
        "Prometheus on another host scrape it.",
    )
    retry_backoff_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="First retry delay of a task with retry_on_error; doubles per attempt, "
        "each delay drawn between half of it and all of it. A provider's Retry-After is a "
        "lower bound.",
    )
    retry_backoff_max_s: float = Field(
        600.0, gt=0, le=86_400, description="Longest delay between two attempts."
    )


class SchedulerSettings(_Section):
    """The scheduler process (`jobsctl scheduler`)."""

    metrics_port: int = Field(
        9465,
        ge=0,
        le=65535,
        description="Port on which `jobsctl scheduler` serves its Prometheus metrics "
        "(fires, skips and misses by schedule). 0: not served.",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address of the scheduler metrics endpoint; `0.0.0.0` to let a "
        "Prometheus on another host scrape it.",
    )


#: Longest webhook source name: the length of ``webhook_events.source``.
SOURCE_NAME_MAX = 100
_SOURCE_NAME = rf"[A-Za-z0-9][A-Za-z0-9._~-]{{0,{SOURCE_NAME_MAX - 1}}}"
#: An HTTP header name (RFC 9110's token).
_HEADER_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"

WebhookScheme = Literal["standard", "github", "stripe", "hmac-sha256", "teams", "graph", "none"]


def _source_name(name: str) -> str:
    """A name is one URL path segment (``/webhooks/<name>``: a ``/`` would never be
    routed) and fits ``webhook_events.source``. Checked as the key itself, so the error
    is located at the source and the other sources are still validated."""
    if not re.fullmatch(_SOURCE_NAME, name):
        msg = (
            f"not a source name: 1 to {SOURCE_NAME_MAX} letters, digits, '.', '_', '~' and "
            "'-', starting with a letter or digit (it is the path segment of "
            "POST /webhooks/<name>)"
        )
        raise ValueError(msg)
    return name


SourceName = Annotated[str, AfterValidator(_source_name)]


class WebhookRoute(_Section):
    """Where events of one type go: a task, optionally a domain action and a delivery."""

    task: str = Field(description="Task enqueued with the single keyword argument event_id.")
    action: ActionName | None = Field(
        None,
        description="Domain action for process_webhook_event (lowercase words separated by /).",
    )
    deliver_to: DeliverTo | None = Field(None, description="Where to send the result.")


class WebhookSource(_Section):
    """One ``[webhooks.sources.<name>]`` table: how to verify and route a sender's calls."""

    scheme: WebhookScheme = Field(description="Signature scheme of the sender.")
    secrets: list[SecretStr] = Field(
        default_factory=list,
        description="Signing secrets; any one may match, so a new one can be added "
        "before the old one is retired.",
    )
    tolerance_s: int = Field(
        300, ge=1, description="Accepted clock skew for signed timestamps, both ways."
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1, le=64 * 1_048_576, description="Larger bodies are refused with 413."
    )
    signature_header: str | None = Field(
        None, description="hmac-sha256: the header holding the signature."
    )
    signature_encoding: Literal["hex", "base64", "auto"] = Field(
        "auto", description="hmac-sha256: how the signature is encoded."
    )
    event_id: str | None = Field(
        None,
        description="Where the event id is: "
        "'header:<Name>' or 'json:<JSON pointer>'; default per scheme.",
    )
    event_type: str | None = Field(
        None,
        description="Where the event type is: "
        "'header:<Name>' or 'json:<JSON pointer>'; default per scheme.",
    )
    default_task: str | None = Field(
        None, description="Task for event types without a route (default: process_webhook_event)."
    )
    routes: dict[str, str | WebhookRoute] = Field(
        default_factory=dict, description="Event type → task name or route table."
    )

    @field_validator("event_id", "event_type")
    @classmethod
    def _locator(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("header:", "json:")):
            msg = "must be 'header:<Name>' or 'json:<JSON pointer>' (e.g. json:/data/id)"
            raise ValueError(msg)
        return value

    @field_validator("signature_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        """The name as verification and redaction both use it: a stray space would be
        stripped by one and not the other, and the signature stored in clear."""
        if value is None:
            return None
        name = value.strip()
        if not re.fullmatch(_HEADER_NAME, name):
            msg = f"{value!r} is not an HTTP header name"
            raise ValueError(msg)
        return name

    @model_validator(mode="after")
    def _scheme_needs(self) -> WebhookSource:
        if self.scheme not in ("none",) and not self.secrets:
            msg = f"scheme {self.scheme!r} needs at least one secret"
            raise ValueError(msg)
        if self.scheme == "hmac-sha256" and not self.signature_header:
            msg = "scheme 'hmac-sha256' needs signature_header"
            raise ValueError(msg)
        if self.scheme == "graph" and (self.event_id or "").startswith("header:"):
            # One POST carries many notifications and one set of headers: every one
            # after the first would be a duplicate of the first, and dropped.
            msg = (
                "scheme 'graph': event_id must be read from each notification "
                "('json:<JSON pointer>'), not from the request's headers"
            )
            raise ValueError(msg)
        return self

    def route_for(self, event_type: str | None) -> WebhookRoute:
        """The route of an event type: its own, else the default task."""
        route = self.routes.get(event_type or "")
        if isinstance(route, WebhookRoute):
            return route
        return WebhookRoute(task=route or self.default_task or "process_webhook_event")


class WebhookSettings(_Section):
    """Incoming webhooks."""

    sources: dict[SourceName, WebhookSource] = Field(
        default_factory=dict,
        description="One table per sender, named by the URL path segment: POST /webhooks/<name>.",
    )
    relay_after_s: float = Field(
        5.0,
        gt=0,
        description="An accepted event not enqueued after this long (the broker "
        "was down) is enqueued by the relay.",
    )
    send_timeout_s: float = Field(
        1.0,
        gt=0,
        le=8,
        description="How long a webhook request waits for its runs to reach the broker "
        "before it is answered 202 anyway (the events are stored; the send goes on, and "
        "the relay covers a send that fails). Senders time out at 10 s (GitHub).",
    )

    @model_validator(mode="after")
    def _default_actions(self) -> WebhookSettings:
        """A source whose events may reach process_webhook_event without an action
        calls ``webhooks/<name>``: that must be an action name too."""
        for name, source in self.sources.items():
            routes = [source.route_for(None), *map(source.route_for, source.routes)]
            defaulted = any(
                route.task == "process_webhook_event" and route.action is None for route in routes
            )
            if defaulted and not re.fullmatch(ACTION_PATTERN, f"webhooks/{name}"):
                msg = (
                    f"source {name!r}: its default domain action webhooks/{name} is not an "
                    "action name (lowercase letters, digits, - and _): rename the source, "
                    "or give each route to process_webhook_event an action"
                )
                raise ValueError(msg)
        return self


class DomainApiSettings(_Section):
    """``[domain_api]``: the application that owns the data (DomainApi agent).

    Every field is optional so a deployment without a domain API still starts; a job
    that needs it fails with a message naming the missing setting.
    """

    base_url: str | None = Field(
        None, description="Base URL; actions are `POST {base_url}/jobs/actions/{action}`."
    )
    token_url: str | None = Field(
        None,
        description="OAuth2 token endpoint (client-credentials grant). Unset: calls "
        "carry no Authorization header.",
    )
    client_id: str | None = Field(None, description="OAuth2 client id.")
    client_secret: SecretStr | None = Field(None, description="OAuth2 client secret.")
    scope: str | None = Field(None, description="OAuth2 scope requested with the token.")
    timeout_s: float = Field(30.0, gt=0, le=600, description="Timeout of one HTTP call.")
    retries: int = Field(
        2,
        ge=0,
        le=10,
        description="In-call retries of a failed call (connection error, 5xx, 429) "
        "before the run itself is retried; every call carries the run id as "
        "Idempotency-Key, so a retry is safe.",
    )

    @field_validator("base_url", "token_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _check_http_url(value)


class GraphSettings(_Section):
    """``[graph]``: Microsoft Graph, for mail, calendar events and Teams channel posts."""

    tenant_id: str | None = Field(None, description="Entra ID tenant (directory) id.")
    token_url: str | None = Field(
        None,
        description="OAuth2 token endpoint. Default: "
        "`https://login.microsoftonline.com/<tenant_id>/oauth2/v2.0/token`.",
    )
    client_id: str | None = Field(None, description="App registration's client id.")
    client_secret: SecretStr | None = Field(None, description="App registration's secret.")
    scope: str = Field(
        "https://graph.microsoft.com/.default", description="Scope of the app-only token."
    )
    base_url: str = Field(
        "https://graph.microsoft.com/v1.0", description="Graph endpoint, including the version."
    )
    sender: str | None = Field(
        None, description="Mailbox (UPN or id) that sends mail and owns calendar events."
    )
    delegated_refresh_token: SecretStr | None = Field(
        None,
        description="Refresh token of a user allowed to post in Teams channels; only "
        "for channels configured with team_id/channel_id.",
    )
    delegated_scope: str = Field(
        "https://graph.microsoft.com/ChannelMessage.Send offline_access",
        description="Scope requested with the delegated token.",
    )
    timeout_s: float = Field(30.0, gt=0, le=600, description="Timeout of one HTTP call.")

    @field_validator("base_url", "token_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _check_http_url(value)

    @property
    def effective_token_url(self) -> str | None:
        """``token_url``, else the Microsoft identity platform endpoint of the tenant."""
        if self.token_url:
            return self.token_url
        if self.tenant_id:
            return f"https://login.microsoftonline.com/{self.tenant_id}/oauth2/v2.0/token"
        return None


class TeamsChannel(_Section):
    """``[channels.teams.<alias>]``: one Teams channel that results can be sent to."""

    webhook_url: SecretStr | None = Field(
        None,
        description="Teams Workflows webhook URL ('Post to a channel when a webhook "
        "request is received'). It embeds a signature, so it is kept secret, and must be "
        "https:// (plain http:// only to a loopback address, for a test server).",
    )
    team_id: str | None = Field(None, description="Team id, to post through Graph instead.")
    channel_id: str | None = Field(None, description="Channel id, with team_id.")

    @model_validator(mode="after")
    def _one_way(self) -> TeamsChannel:
        through_graph = self.team_id is not None or self.channel_id is not None
        if self.webhook_url is not None and through_graph:
            msg = "set either webhook_url or team_id and channel_id, not both"
            raise ValueError(msg)
        if self.webhook_url is None and not (self.team_id and self.channel_id):
            msg = "needs webhook_url, or team_id and channel_id"
            raise ValueError(msg)
        if self.webhook_url is not None:
            url = self.webhook_url.get_secret_value()
            _check_http_url(url)
            if url.startswith("http://") and not _to_loopback(url):
                # The URL carries the signature that lets anyone post to the channel.
                msg = (
                    "webhook_url must be https://: its signature would cross the network "
                    "in clear text (plain http:// is only for a test server on loopback)"
                )
                raise ValueError(msg)
        return self


class ChannelSettings(_Section):
    """``[channels]``: named delivery channels that ``deliver_to`` refers to."""

    teams: dict[str, TeamsChannel] = Field(
        default_factory=dict,
        description='Teams channels by alias: `deliver_to = {teams_channel = "<alias>"}`.',
    )


class RunsSettings(_Section):
    """Run history."""

    retention_days: int = Field(
        30,
        ge=1,
        le=36_500,
        description="`cleanup_old_runs` deletes finished runs older than this, and "
        "processed or failed webhook events (kept at least 8 days).",
    )
    stuck_after_s: int = Field(
        3600,
        ge=1,
        description="`check_system_health` reports runs queued or running longer "
        "than this as stuck.",
    )
    record_batch_size: int = Field(
        500, ge=1, le=10_000, description="Run events written per database statement."
    )
    record_flush_interval_ms: int = Field(
        # Short: see jobs_service.infrastructure.run_recorder for why.
        20,
        ge=1,
        le=10_000,
        description="Longest a run event waits before it is written; after a flush of "
        "100 events or more (a busy worker), five times this, so statements stay large "
        "under load.",
    )
    progress_flush_interval_ms: int = Field(
        500,
        ge=10,
        le=60_000,
        description="Least time between two progress writes of a worker process: reports "
        "made meanwhile are coalesced, the latest of each run is written.",
    )


class AuditSettings(_Section):
    """``[audit]``: how long the audit log is kept."""

    retention_days: int | None = Field(
        None,
        ge=1,
        le=36_500,
        description="`cleanup_old_runs` deletes audit entries older than this. Unset: "
        "the audit log is kept for good.",
    )


class Settings(BaseSettings):
    """Everything configurable, with its default."""

    model_config = SettingsConfigDict(
        env_prefix="JOBS_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
        # URLs carry passwords: a validation error must name the key, not echo the value.
        hide_input_in_errors=True,
    )

    env: Literal["development", "test", "staging", "production"] = Field(
        "development",
        description="`production` refuses to start without API keys or with unsafe options.",
    )
    config_file: Path | None = Field(
        None,
        description="TOML file with settings; environment variables override it. Named by "
        "`JOBS_CONFIG_FILE` or `jobsctl --config`, never inside the file itself.",
    )
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy async URL: `postgresql+asyncpg://…` in production, "
        "`sqlite+aiosqlite:///…` for the embedded default.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL. Set: RedisStreamBroker and separate worker processes. "
        "Unset: TaskIQ's in-memory broker inside `jobsctl run`.",
    )
    redis_prefix: str = Field(
        "jobs",
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Prefix of every Redis key, so several deployments can share a server.",
    )
    task_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra modules that register tasks, comma-separated in the "
        "environment (`JOBS_TASK_MODULES=myapp.jobs,myapp.reports`).",
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="`auto`: console on a terminal, JSON otherwise."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level logged."
    )
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description="`[[api_keys]]` entries. None: the gateway serves loopback only.",
    )
    api: ApiSettings = Field(default_factory=ApiSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    runs: RunsSettings = Field(default_factory=RunsSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    domain_api: DomainApiSettings = Field(default_factory=DomainApiSettings)
    graph: GraphSettings = Field(default_factory=GraphSettings)
    channels: ChannelSettings = Field(default_factory=ChannelSettings)

    @field_validator("task_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            msg = "must start with postgresql+asyncpg:// or sqlite+aiosqlite://"
            raise ValueError(msg)
        return value

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_redis_url_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            msg = "must start with redis://, rediss:// or unix://"
            raise ValueError(msg)
        return value or None

    @model_validator(mode="after")
    def _unique_key_names(self) -> Settings:
        names = [key.name for key in self.api_keys]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            msg = f"api_keys: duplicate name(s) {', '.join(duplicates)}"
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _known_channels(self) -> Settings:
        aliases = set(self.channels.teams)
        for name, source in self.webhooks.sources.items():
            for event_type, route in source.routes.items():
                target = route.deliver_to if isinstance(route, WebhookRoute) else None
                if target and target.teams_channel and target.teams_channel not in aliases:
                    msg = (
                        f"webhooks.sources.{name}.routes.{event_type}.deliver_to: no "
                        f"[channels.teams.{target.teams_channel}] is configured"
                    )
                    raise ValueError(msg)
        return self

    @property
    def embedded(self) -> bool:
        """No Redis: the gateway, worker and scheduler share one process."""
        return self.redis_url is None

    @property
    def is_sqlite(self) -> bool:
        """The run history lives in a SQLite file."""
        return self.database_url.startswith("sqlite")

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Build settings from the environment and the TOML file.

        ``config_file`` (else ``JOBS_CONFIG_FILE``) names the TOML file; a named file
        that does not exist is an error rather than silently ignored.
        """
        token = _config_file_override.set(config_file)
        try:
            return cls(**overrides)
        finally:
            _config_file_override.reset(token)

    @classmethod
    def unvalidated(cls, config_file: Path | None = None) -> dict[str, Any]:
        """What :meth:`load` validates, as plain data: the file's tables with the
        ``JOBS_*`` environment over them. For ``jobsctl check``, which validates what it
        can of a configuration that does not load."""
        token = _config_file_override.set(config_file)
        try:
            file = _file_source(cls)
        finally:
            _config_file_override.reset(token)
        given = file() if file is not None else {}
        return _merged(given, EnvSettingsSource(cls)())

    @classmethod
    def from_given(cls, given: Mapping[str, Any]) -> Settings:
        """Settings from :meth:`unvalidated`'s data (``check`` takes out what fails),
        without reading the file and the environment again."""
        token = _given_only.set(True)
        try:
            return cls(**given)
        finally:
            _given_only.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment over file over defaults; the file is read only when named."""
        if _given_only.get():
            return (init_settings,)
        toml = _file_source(settings_cls)
        if toml is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, toml)


def _file_source(settings_cls: type[BaseSettings]) -> TomlConfigSettingsSource | None:
    """The TOML file named by ``load``'s argument, else ``JOBS_CONFIG_FILE``, or None."""
    path = _config_file_override.get()
    if path is None and os.environ.get("JOBS_CONFIG_FILE"):
        path = Path(os.environ["JOBS_CONFIG_FILE"])
    if path is None:
        return None
    if not path.is_file():
        msg = f"config file {path} does not exist (named by --config or JOBS_CONFIG_FILE)"
        raise ConfigurationError(msg)
    toml = TomlConfigSettingsSource(settings_cls, toml_file=path)
    if "config_file" in toml.toml_data:
        # It would be read and ignored: the file is already chosen by then.
        msg = (
            f"{path}: config_file cannot be set inside the config file; name the file "
            "with --config or JOBS_CONFIG_FILE"
        )
        raise ConfigurationError(msg)
    return toml


def _merged(low: Mapping[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    """``high`` over ``low``, table by table (as the settings sources combine)."""
    merged = dict(low)
    for key, value in high.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            merged[key] = _merged(below, value)
        else:
            merged[key] = value
    return merged


def _check_http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        msg = "must be an http:// or https:// URL"
        raise ValueError(msg)
    return value


def _to_loopback(url: str) -> bool:
    """Whether ``url`` names a loopback host (False for a URL that cannot be parsed)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return is_loopback_host(host or "")


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: What Kubernetes sets for a Service named ``jobs`` or ``jobs-<anything>`` (service
#: links): not settings. A bare ``…_PORT`` is one only by its value (``tcp://host:port``),
#: as ``JOBS_API_PORT`` may also be a mistyped ``JOBS_API__PORT``.
_SERVICE_LINK = re.compile(
    r"JOBS_(\w+_)?(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_\w+)?)"
)
_SERVICE_LINK_PORT = re.compile(r"JOBS_(\w+_)?PORT")
_SERVICE_LINK_URL = re.compile(r"(tcp|udp|sctp)://\S+")


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """``JOBS_*`` variables that name no setting, each with the closest that does.

    Keys in the TOML file and inside a table (``JOBS_WORKER__...``) that name nothing
    fail validation; a misspelt top-level variable would instead be ignored without a
    word (``JOBS_ENVIRONMENT=production`` leaves the service in development, its
    production checks off), so these are named for a warning.
    """
    environ = os.environ if environ is None else environ
    fields = {name.upper() for name in Settings.model_fields}
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("JOBS_") or _is_service_link(upper, environ[name]):
            continue
        top, nested, rest = upper.removeprefix("JOBS_").partition("__")
        if top in fields:
            continue
        found.append((name, _closest_setting(top, fields, nested + rest)))
    return found


def _is_service_link(name: str, value: str) -> bool:
    if _SERVICE_LINK.fullmatch(name):
        return True
    return bool(_SERVICE_LINK_PORT.fullmatch(name) and _SERVICE_LINK_URL.fullmatch(value))


def _closest_setting(top: str, fields: set[str], nested: str) -> str | None:
    """``ENVIRONMENT`` → ``JOBS_ENV`` (one starts with the other), else the most alike."""
    overlapping = [field for field in fields if top.startswith(field) or field.startswith(top)]
    close = overlapping or difflib.get_close_matches(top, sorted(fields), n=1, cutoff=0.6)
    return f"JOBS_{max(close, key=len)}{nested}" if close else None
