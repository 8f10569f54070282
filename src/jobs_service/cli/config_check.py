"""What ``jobsctl check`` finds in a configuration, as plain data.

Pure functions from the settings (or from the error that stopped them loading) to
:class:`Finding` values, so every rule is testable without a process; ``admin.check``
only prints them. A *problem* fails the check; a *warning* names something that starts
but will fail the jobs that need it.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from jobs_service.core.redaction import redact_url
from jobs_service.core.settings import (
    Settings,
    WebhookRoute,
    is_loopback_host,
    unknown_environment,
)
from jobs_service.tasks.registry import TASK_NAME_PATTERN

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

    from pydantic import ValidationError
    from pydantic_core import ErrorDetails

    from jobs_service.core.settings import DomainApiSettings, GraphSettings
    from jobs_service.tasks.registry import TaskInfo

__all__ = [
    "Finding",
    "check_settings",
    "describe_settings",
    "environment_findings",
    "label_schedule_findings",
    "toml_error_message",
    "validation_findings",
]

Level = Literal["problem", "warning"]
_IMPLICIT_WEBHOOK_TASK = "process_webhook_event"
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_PYDANTIC_PREFIX = re.compile(r"^(?:Value error|Assertion failed), ")
# A model validator that knows better than its location starts its message with a key path.
_LEADING_PATH = re.compile(r"^([A-Za-z_][\w.\"-]*): (.+)$", re.DOTALL)
#: The last item of an error's location when a dict's key, not its value, failed.
_KEY_ITSELF = "[key]"
_TOML_POSITION = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing ``check`` reports: where in the configuration, and what is wrong there."""

    level: Level
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.path}: {self.message}"


def _problem(path: str, message: str) -> Finding:
    return Finding("problem", path, message)


def _warning(path: str, message: str) -> Finding:
    return Finding("warning", path, message)


def _key(part: str | int) -> str:
    """A path segment as TOML would spell it, so ``routes."invoice.paid"`` stays one key."""
    text = str(part)
    return text if isinstance(part, int) or _BARE_KEY.fullmatch(text) else json.dumps(text)


# --- validation errors -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Located:
    parts: tuple[str, ...]
    #: (depth, member) of each union pydantic tried: its error locations name the member.
    branches: tuple[tuple[int, str], ...]
    message: str


def validation_findings(error: ValidationError) -> list[Finding]:
    """Every error of a failed load as a problem with a key path.

    Pydantic reports a value that fits no member of a union once per member; only the
    member that matched the value furthest is the one the author meant, so only its
    errors are kept. Messages come from validators, never the input (the settings hide
    input in errors), so no secret is echoed.
    """
    located = [_locate(detail) for detail in error.errors(include_url=False)]
    kept = [item for item in located if not _beaten(item, located)]
    return [_as_finding(item) for item in _merge_alternatives(kept)]


def _locate(detail: ErrorDetails) -> _Located:
    parts: list[str] = []
    branches: list[tuple[int, str]] = []
    annotation: Any = Settings
    for item in detail["loc"]:
        if item == _KEY_ITSELF:  # the dict key is what failed: the path ends at it
            break
        members = _union_members(annotation)
        if isinstance(item, str) and item in members:
            branches.append((len(parts), item))
            annotation = members[item]
            continue
        parts.append(_key(item))
        annotation = _child(annotation, item)
    message = _PYDANTIC_PREFIX.sub("", detail["msg"])
    return _Located(tuple(parts), tuple(branches), message)


def _union_members(annotation: Any) -> dict[str, Any]:
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return {}
    members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if len(members) < 2:
        return {}
    return {_tag(member): member for member in members}


def _tag(member: Any) -> str:
    if typing.get_origin(member) is None and isinstance(member, type):
        return member.__name__
    return repr(member).replace(" ", "")


def _child(annotation: Any, item: str | int) -> Any:
    members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(members) == 1:
        annotation = members[0]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is None and isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(item))
        return None if field is None else field.annotation
    if origin is dict and len(args) == 2:
        return args[1]
    if origin is list and args:
        return args[0]
    return None


def _beaten(item: _Located, located: Sequence[_Located]) -> bool:
    """Another member of the same union got deeper into the value than this one."""
    return any(
        len(other.parts) > len(item.parts)
        and any(
            depth == other_depth and tag != other_tag and item.parts[:depth] == other.parts[:depth]
            for depth, tag in item.branches
            for other_depth, other_tag in other.branches
        )
        for other in located
    )


def _merge_alternatives(located: Sequence[_Located]) -> list[_Located]:
    """Members that failed equally at the same key are one problem: any of them would do."""
    merged: dict[tuple[str, ...], _Located] = {}
    result: list[_Located] = []
    for item in located:
        first = merged.get(item.parts)
        if first is None or not (item.branches and first.branches):
            merged.setdefault(item.parts, item)
            result.append(item)
            continue
        joined = _Located(first.parts, first.branches, f"{first.message}; or {item.message}")
        result[result.index(first)] = joined
        merged[item.parts] = joined
    return result


def _as_finding(item: _Located) -> Finding:
    where = ".".join(item.parts)
    leading = _LEADING_PATH.match(item.message)
    if leading and (not where or f"{leading.group(1)}.".startswith(f"{where}.")):
        return _problem(leading.group(1), leading.group(2))
    return _problem(where or "settings", item.message)


def toml_error_message(error: ValueError, path: str) -> str:
    """``file:line:column: invalid TOML: what``, the form editors and terminals jump to.

    tomllib gives the position only inside its message (``(at line 3, column 26)``).
    """
    if isinstance(error, UnicodeDecodeError):
        before = error.object[: error.start]
        line, column = before.count(b"\n") + 1, error.start - before.rfind(b"\n")
        return f"{path}:{line}:{column}: invalid TOML: not UTF-8 text"
    position = _TOML_POSITION.match(str(error))
    if position is None:
        return f"{path}: invalid TOML: {error}"
    return f"{path}:{position['line']}:{position['col']}: invalid TOML: {position['msg']}"


# --- summary -------------------------------------------------------------------------------


def describe_settings(settings: Settings, tasks: Sequence[str]) -> list[str]:
    """What this configuration sets up, so an operator sees at a glance what is missing."""
    sources = sorted(settings.webhooks.sources)
    teams = sorted(settings.channels.teams)
    rows = [
        (
            "settings",
            f"env={settings.env} database={redact_url(settings.database_url)} "
            f"broker={'redis' if settings.redis_url else 'in-memory'}",
        ),
        (
            "tasks",
            f"{len(tasks)} registered "
            f"(modules: {', '.join(settings.task_modules) or 'built-in only'})",
        ),
        ("api keys", str(len(settings.api_keys))),
        ("webhooks", f"{_count(sources, 'source')} ({', '.join(sources)})" if sources else "none"),
        ("domain api", _domain_api_status(settings.domain_api)),
        ("graph", _graph_status(settings.graph)),
        ("channels", f"teams: {', '.join(teams)}" if teams else "none"),
    ]
    return [f"{label:<10} {value}" for label, value in rows]


def _domain_api_status(api: DomainApiSettings) -> str:
    if not _domain_api_set(api):
        return "not configured (jobs that call it fail)"
    return _completeness(_domain_api_missing(api))


def _graph_status(graph: GraphSettings) -> str:
    return _completeness(_graph_missing(graph)) if _graph_set(graph) else "not configured"


def _completeness(missing: list[str]) -> str:
    return f"incomplete (missing: {', '.join(missing)})" if missing else "configured"


def _count(items: Sequence[str], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


# --- rules ---------------------------------------------------------------------------------


def check_settings(
    settings: Settings,
    tasks: Collection[str] | None,
    *,
    takes_event: Callable[[str], str | None] | None = None,
) -> list[Finding]:
    """Rules across keys that validation alone cannot see; problems first.

    ``tasks`` are the registered task names: settings name tasks as strings, so only
    the loaded registry can tell a typo from a task (None: the registry could not be
    loaded, and what depends on it is not checked). ``takes_event`` says why a task
    cannot be a webhook route's (it is called with ``event_id`` alone), or None.
    """
    registered = tasks if tasks is not None else ()
    findings = [
        *_task_names(registered),
        *_api_keys(settings),
        *(_webhook_routes(settings, tasks, takes_event) if tasks is not None else ()),
        *_webhook_schemes(settings),
        *_unsigned_event_ids(settings),
        *_domain_api(settings),
        *_graph(settings),
        *_teams_channels(settings),
        *_plain_http(settings),
    ]
    return sorted(findings, key=lambda finding: finding.level != "problem")


def label_schedule_findings(tasks: Sequence[TaskInfo]) -> list[Finding]:
    """Schedule labels the scheduler would leave out (a cron or zone that cannot be a
    schedule) or whose every fire would be skipped (required arguments): at start-up
    they are only log lines, so ``check`` makes them problems a developer sees."""
    from jobs_service.scheduler.labels import label_schedule_problems  # noqa: PLC0415

    return [
        _problem("task_modules", f"task {info.name!r}: {problem}")
        for info in tasks
        for problem in label_schedule_problems(info)
    ]


def environment_findings(environ: Mapping[str, str]) -> list[Finding]:
    """``JOBS_*`` variables that name no setting: ignored by the service, so warned of
    (a typo such as ``JOBS_ENVIRONMENT`` would silently keep the defaults)."""
    findings = []
    for name, closest in unknown_environment(environ):
        hint = f" (did you mean {closest}?)" if closest else ""
        findings.append(_warning(name, f"names no setting and is ignored{hint}"))
    return findings


def _task_names(tasks: Collection[str]) -> Iterator[Finding]:
    for name in sorted(tasks):
        if not TASK_NAME_PATTERN.fullmatch(name):
            yield _problem("task_modules", f"task {name!r} is not named verb_noun")


def _api_keys(settings: Settings) -> Iterator[Finding]:
    if settings.env == "production" and not settings.api_keys:
        yield _problem("api_keys", "production needs at least one [[api_keys]] entry")


def _webhook_routes(
    settings: Settings, tasks: Collection[str], takes_event: Callable[[str], str | None] | None
) -> Iterator[Finding]:
    """A route to a missing task would fail every event of its type, so the gateway
    refuses; so would a task that cannot be called with ``event_id`` alone."""

    def route_problem(path: str, task: str) -> Iterator[Finding]:
        if task not in tasks:
            yield _problem(path, _unknown_task(task, tasks))
        elif takes_event is not None and (reason := takes_event(task)) is not None:
            yield _problem(path, f"task {task!r} cannot take a webhook event ({reason})")

    for name, source in settings.webhooks.sources.items():
        base = f"webhooks.sources.{_key(name)}"
        for event_type, route in source.routes.items():
            task = route.task if isinstance(route, WebhookRoute) else route
            yield from route_problem(f"{base}.routes.{_key(event_type)}", task)
        if source.default_task is not None:
            yield from route_problem(f"{base}.default_task", source.default_task)
        elif _IMPLICIT_WEBHOOK_TASK not in tasks:
            yield _problem(
                base,
                f"events without a route go to {_IMPLICIT_WEBHOOK_TASK!r}, which is not "
                "registered; set default_task",
            )


def _unknown_task(task: str, tasks: Collection[str]) -> str:
    close = difflib.get_close_matches(task, list(tasks), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"task {task!r} is not registered{hint}"


def _webhook_schemes(settings: Settings) -> Iterator[Finding]:
    from jobs_service.webhooks.schemes import source_scheme  # noqa: PLC0415

    for name, source in settings.webhooks.sources.items():
        # What the gateway builds at start: a secret it cannot decode stops it there.
        try:
            source_scheme(source)
        except ValueError as exc:
            yield _problem(f"webhooks.sources.{_key(name)}", str(exc))
        if source.scheme == "none" and settings.env == "production":
            yield _problem(
                f"webhooks.sources.{_key(name)}.scheme",
                "'none' accepts unsigned calls from anyone; not allowed in production",
            )


#: The headers a scheme's signature covers besides its own: only Standard Webhooks signs
#: one (its id). Graph and ``none`` sign nothing, so no locator makes them worse.
_SIGNED_HEADERS = {"standard": frozenset({"webhook-id"})}
_UNSIGNED_SCHEMES = ("graph", "none")


def _unsigned_event_ids(settings: Settings) -> Iterator[Finding]:
    """An event id read from a header the signature does not cover: anyone holding one
    delivery can send it again under new ids, each a new event and a new run."""
    for name, source in settings.webhooks.sources.items():
        kind, _, header = (source.event_id or "").partition(":")
        header = header.strip().lower()
        if kind != "header" or source.scheme in _UNSIGNED_SCHEMES:
            continue
        if header in _SIGNED_HEADERS.get(source.scheme, frozenset()):
            continue
        yield _warning(
            f"webhooks.sources.{_key(name)}.event_id",
            f"the {source.scheme} signature does not cover {header}: a captured delivery "
            "sent again under new ids is a new event each time; read the id from the "
            "signed body (json:<pointer>) or leave event_id unset",
        )


def _is_set(value: str | SecretStr | None) -> bool:
    return bool(value.get_secret_value() if isinstance(value, SecretStr) else value)


def _domain_api_set(api: DomainApiSettings) -> bool:
    keys = (api.base_url, api.token_url, api.client_id, api.client_secret, api.scope)
    return any(map(_is_set, keys))


def _domain_api_missing(api: DomainApiSettings) -> list[str]:
    """Any key needs base_url; OAuth2 needs token_url, client_id and client_secret together."""
    if not _domain_api_set(api):
        return []
    oauth = {
        "token_url": api.token_url,
        "client_id": api.client_id,
        "client_secret": api.client_secret,
    }
    missing = [] if _is_set(api.base_url) else ["base_url"]
    if any(map(_is_set, oauth.values())) or _is_set(api.scope):
        missing += [key for key, value in oauth.items() if not _is_set(value)]
    return missing


def _domain_api(settings: Settings) -> Iterator[Finding]:
    """Half a [domain_api] is a mistake, not a choice: every call would fail."""
    missing = _domain_api_missing(settings.domain_api)
    if missing:
        yield _problem("domain_api", f"{', '.join(missing)} not set; every call would fail")


def _graph_set(graph: GraphSettings) -> bool:
    keys = (graph.tenant_id, graph.token_url, graph.client_id, graph.client_secret, graph.sender)
    return any(map(_is_set, (*keys, graph.delegated_refresh_token)))


def _graph_app_missing(graph: GraphSettings) -> list[str]:
    """Keys of the app registration every Graph call needs."""
    keys = {
        "tenant_id (or token_url)": graph.effective_token_url,
        "client_id": graph.client_id,
        "client_secret": graph.client_secret,
    }
    return [key for key, value in keys.items() if not _is_set(value)]


def _graph_missing(graph: GraphSettings) -> list[str]:
    if not _graph_set(graph):
        return []
    return _graph_app_missing(graph) + ([] if _is_set(graph.sender) else ["sender"])


def _graph(settings: Settings) -> Iterator[Finding]:
    """Only a warning: the worker starts without Graph; jobs that use it fail, saying why."""
    missing = _graph_missing(settings.graph)
    if missing:
        yield _warning("graph", f"{', '.join(missing)} not set; the jobs that use Graph will fail")


def _teams_channels(settings: Settings) -> Iterator[Finding]:
    """A channel posted through Graph needs a user's token: it is unusable without one."""
    graph = settings.graph
    missing = _graph_app_missing(graph)
    if not _is_set(graph.delegated_refresh_token):
        missing.append("delegated_refresh_token")
    if not missing:
        return
    keys = ", ".join(f"graph.{key}" for key in missing)
    for alias, channel in settings.channels.teams.items():
        if channel.team_id is not None:
            yield _problem(
                f"channels.teams.{_key(alias)}",
                f"posts through Graph (team_id, channel_id) but {keys} not set",
            )


def _plain_http(settings: Settings) -> Iterator[Finding]:
    """Tokens and payloads in clear text across a network are for development only."""
    if settings.env != "production":
        return
    urls = {
        "domain_api.base_url": settings.domain_api.base_url,
        "domain_api.token_url": settings.domain_api.token_url,
        "graph.base_url": settings.graph.base_url,
        "graph.token_url": settings.graph.token_url,
    }
    for path, url in urls.items():
        if url and url.startswith("http://") and not is_loopback_host(urlsplit(url).hostname or ""):
            yield _warning(path, "plain http:// to a non-loopback host in production; use https://")
