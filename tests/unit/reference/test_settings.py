"""The configuration reference documents every key, truthfully."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
from pydantic import BaseModel, Field

from jobs_service.core.settings import Settings
from jobs_service.reference.settings import (
    config_json_schema,
    render_settings,
    settings_sections,
    undocumented,
)

if TYPE_CHECKING:
    from jobs_service.reference.settings import SettingDoc

PAGE = render_settings()
SCHEMA = config_json_schema()
SETTINGS = [setting for section in settings_sections() for setting in section.settings]
BY_PATH = {setting.path: setting for setting in SETTINGS}
CONFIGURATION_PAGE = Path(__file__).parents[3] / "docs" / "configuration.md"
_KEY_CELL = re.compile(r"^\| \[?`([^`]+)`", re.MULTILINE)
_CHOSEN_NAME = re.compile(r"<[a-z_]+>")


def _resolve(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The concrete schemas a property may take: ``$ref`` followed, unions opened."""
    if "$ref" in node:
        return _resolve(SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[-1]])
    if "anyOf" in node:
        return [found for option in node["anyOf"] for found in _resolve(option)]
    return [node]


def _schema_keys(node: dict[str, Any], path: str = "") -> dict[str, dict[str, Any]]:
    """Every key of the JSON Schema by path (``[]`` for list items, ``*`` for names),
    walked independently of the renderer so the two can be compared."""
    found: dict[str, dict[str, Any]] = {}
    for shape in _resolve(node):
        for name, child in shape.get("properties", {}).items():
            child_path = f"{path}.{name}" if path else name
            found[child_path] = child
            found.update(_schema_keys(child, child_path))
        extra = shape.get("additionalProperties")
        if isinstance(extra, dict):
            found.update(_schema_keys(extra, f"{path}.*"))
        items = shape.get("items")
        if shape.get("type") == "array" and isinstance(items, dict):
            found.update(_schema_keys(items, f"{path}[]"))
    return found


SCHEMA_KEYS = _schema_keys(SCHEMA)


def test_every_key_of_the_model_is_on_the_page_and_nothing_else() -> None:
    """The rendered keys are exactly the model's keys, nested tables included."""
    rendered = {_CHOSEN_NAME.sub("*", path) for path in _KEY_CELL.findall(PAGE)}
    assert rendered == set(SCHEMA_KEYS)
    assert {"api_keys[].scopes", "webhooks.sources.*.routes.*.deliver_to.email.cc"} <= rendered
    assert "channels.teams.*.webhook_url" in rendered


def test_every_key_has_a_description() -> None:
    """A field without a description (its own, or its table's docstring) is a gap."""
    missing = [
        path
        for path, node in SCHEMA_KEYS.items()
        if not node.get("description")
        and not any(shape.get("description") for shape in _resolve(node))
    ]
    assert missing == []
    assert undocumented() == []


def test_an_undocumented_field_is_reported() -> None:
    """The check finds a field without a description, also in a nested table."""

    class Inner(BaseModel):
        """A table."""

        size: int = 1

    class Outer(BaseModel):
        name: str = Field("x", description="Documented.")
        inner: Inner = Field(default_factory=Inner)

    assert undocumented(Outer) == ["inner.size"]


def _changed(setting: SettingDoc) -> tuple[str, Any]:
    """A value other than the default, within the key's bounds, as env text and parsed."""
    model: type[BaseModel] = Settings
    *parents, name = setting.path.split(".")
    for parent in parents:
        annotation = model.model_fields[parent].annotation
        assert isinstance(annotation, type)
        model = annotation
    field = model.model_fields[name]
    default = field.get_default(call_default_factory=True)
    if isinstance(default, bool):
        return ("false" if default else "true"), not default
    if default is None:  # unset by default (audit.retention_days): any allowed value
        lower = next((meta.ge for meta in field.metadata if hasattr(meta, "ge")), 0)
        return str(lower + 1), lower + 1
    upper = next((meta.le for meta in field.metadata if hasattr(meta, "le")), None)
    value = default - 1 if upper is not None and default + 1 > upper else default + 1
    return str(value), value


_ENV_CASES = [
    setting
    for setting in SETTINGS
    if setting.env is not None
    and "<" not in setting.env
    and setting.type.startswith(("integer", "boolean"))
]


@pytest.mark.parametrize("setting", _ENV_CASES, ids=lambda setting: setting.path)
def test_the_documented_variable_sets_the_key(
    setting: SettingDoc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setting the variable the page names changes exactly that key."""
    assert setting.env is not None
    text, expected = _changed(setting)
    monkeypatch.setenv(setting.env, text)
    value: Any = Settings()
    for part in setting.path.split("."):
        value = getattr(value, part)
    assert value == expected


def test_the_env_cases_cover_every_section() -> None:
    """The variable check reaches into each plain section, not only the top level."""
    sections = {setting.path.split(".")[0] for setting in _ENV_CASES}
    assert {"api", "broker", "database", "worker", "scheduler", "runs", "domain_api"} <= sections


def test_a_name_in_a_variable_becomes_a_table_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """``<alias>`` in a documented variable is replaced by the table's name."""
    team = BY_PATH["channels.teams.<alias>.team_id"].env
    channel = BY_PATH["channels.teams.<alias>.channel_id"].env
    assert team == "JOBS_CHANNELS__TEAMS__<ALIAS>__TEAM_ID"
    assert channel is not None
    monkeypatch.setenv(team.replace("<ALIAS>", "OPS"), "t-1")
    monkeypatch.setenv(channel.replace("<ALIAS>", "OPS"), "c-1")
    assert Settings().channels.teams["ops"].team_id == "t-1"


def test_keys_inside_arrays_are_set_through_the_enclosing_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``[[api_keys]]`` entries have no variable of their own: the page says which JSON."""
    setting = BY_PATH["api_keys[].name"]
    assert setting.env is None
    assert setting.env_container == "JOBS_API_KEYS"
    assert "in `JOBS_API_KEYS` (JSON)" in PAGE
    entry = {"name": "ops", "sha256": "a" * 64, "scopes": ["read"]}
    monkeypatch.setenv("JOBS_API_KEYS", json.dumps([entry]))
    assert Settings().api_keys[0].name == "ops"


def test_route_keys_are_not_given_variables_they_cannot_have() -> None:
    """Routes map an event type to a task name or a table: only their JSON is settable."""
    route_task = BY_PATH["webhooks.sources.<name>.routes.<event_type>.task"]
    assert route_task.env is None
    assert route_task.env_container == "JOBS_WEBHOOKS__SOURCES__<NAME>__ROUTES"


def test_tables_get_their_own_section_and_a_link_from_their_key() -> None:
    """Nested tables are headed as written in TOML, and their key links to them."""
    for heading in (
        "## `[[api_keys]]` {#config-api-keys}",
        "## `[webhooks.sources.<name>]`",
        "## `[webhooks.sources.<name>.routes.<event_type>.deliver_to]`",
        "## `[channels.teams.<alias>]`",
        "## `[scheduler]` {#config-scheduler}",
    ):
        assert heading in PAGE
    assert "[`api_keys`](#config-api-keys)" in PAGE


@pytest.mark.parametrize(
    ("path", "default"),
    [
        ("api.request_log", "`true`"),
        ("api.cors_origins", "`[]`"),
        ("graph.scope", '`"https://graph.microsoft.com/.default"`'),
        ("api_keys[].sha256", "required"),
        ("redis_url", "unset"),
    ],
)
def test_defaults_are_written_as_in_toml(path: str, default: str) -> None:
    """Defaults read as the TOML an operator would write."""
    assert BY_PATH[path].default == default


def test_types_carry_their_bounds_and_secrecy() -> None:
    """Constraints the model enforces are shown; secrets are marked."""
    assert BY_PATH["api.port"].type == "integer, ≥ 1, ≤ 65535"
    assert BY_PATH["graph.client_secret"].type == "string (secret)"
    assert BY_PATH["api_keys[].scopes"].type.startswith("list of `read`, `operate`, `admin`")


def test_comma_separated_variables_are_not_called_json() -> None:
    """``task_modules`` is split on commas in the environment, not parsed as JSON."""
    assert not BY_PATH["task_modules"].json_in_env
    assert BY_PATH["api.cors_origins"].json_in_env


def _documented_example() -> dict[str, Any]:
    text = CONFIGURATION_PAGE.read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.DOTALL)
    assert block is not None, "docs/configuration.md has a TOML example"
    return tomllib.loads(block.group(1))


def test_the_json_schema_accepts_the_documented_example() -> None:
    """The published schema and the service agree on the example operators copy."""
    example = _documented_example()
    jsonschema.Draft202012Validator(SCHEMA).validate(example)
    Settings.model_validate(example)


_DOCS = Path(__file__).parents[3] / "docs"
_TOML_EXAMPLES = [
    pytest.param(block.group(1), id=f"{page.relative_to(_DOCS.parent)}:{number}")
    for page in [*sorted(_DOCS.rglob("*.md")), _DOCS.parent / "README.md"]
    for number, block in enumerate(re.finditer(r"```toml\n(.*?)```", page.read_text(), re.DOTALL))
]


def test_the_docs_have_toml_examples() -> None:
    assert len(_TOML_EXAMPLES) >= 10


@pytest.mark.parametrize("example", _TOML_EXAMPLES)
def test_every_toml_example_in_the_docs_is_a_valid_configuration(example: str) -> None:
    """An operator who pastes an example into the config file gets a service that
    starts: it is TOML, and the settings accept it as it stands."""
    Settings.model_validate(tomllib.loads(example))


@pytest.mark.parametrize(
    "mistake",
    [
        {"brokr": {}},
        {"api": {"port": "eighty"}},
        {"api": {"port": 70000}},
        {"api_keys": [{"name": "ops", "sha256": "a" * 64, "scopes": ["root"]}]},
        {"webhooks": {"sources": {"gh": {"scheme": "github", "secret": "typo"}}}},
    ],
)
def test_the_json_schema_flags_what_the_service_refuses(mistake: dict[str, Any]) -> None:
    """Typos, wrong types and out-of-range values fail in the editor as at start-up."""
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(mistake))


def test_the_json_schema_declares_its_dialect() -> None:
    """Editors pick the validator from ``$schema``; the title says what file it is for."""
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "JOBS_CONFIG_FILE" in SCHEMA["title"]
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
