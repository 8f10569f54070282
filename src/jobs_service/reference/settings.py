"""The configuration reference, walked out of :class:`~jobs_service.core.settings.Settings`.

Every field of ``Settings`` and of every table nested in it (sections, ``[[api_keys]]``,
webhook sources and routes, ``deliver_to``, Teams channels) becomes one row: its TOML key
path, type, default, environment variable and description. The descriptions are the
``Field(description=...)`` texts, so the page an operator reads and the model the
service validates against are the same thing; a field without a description is a gap
the tests refuse.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic_settings import NoDecode

from jobs_service.core.settings import Settings
from jobs_service.reference.markdown import code, docstring, paragraph, table

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

__all__ = [
    "ENV_PREFIX",
    "SectionDoc",
    "SettingDoc",
    "config_json_schema",
    "render_settings",
    "settings_sections",
    "undocumented",
]

ENV_PREFIX = "JOBS_"
#: How the key of a table keyed by name is written in paths (``webhooks.sources.<name>``);
#: fields whose keys mean something more specific say so.
NAME = "<name>"
_KEY_NAMES = {"routes": "<event_type>", "teams": "<alias>"}
_SIMPLE = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    SecretStr: "string (secret)",
    Path: "path",
}
_PLURAL = {
    "string": "strings",
    "string (secret)": "strings (secret)",
    "integer": "integers",
    "number": "numbers",
    "table": "tables",
}


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """One documented key.

    ``env`` is the variable that sets it on its own; keys inside a list, or inside a
    table keyed by arbitrary text (webhook routes by event type), have none and are set
    through ``env_container``, a JSON value for the enclosing key.
    """

    path: str
    type: str
    default: str
    description: str
    env: str | None
    env_container: str | None
    json_in_env: bool
    anchor: str | None = None


@dataclass(slots=True)
class SectionDoc:
    """One TOML table and the keys it holds."""

    path: str
    heading: str
    anchor: str
    doc: str
    settings: list[SettingDoc] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Nested:
    """A model reached through a field: how its keys extend the path and the env name."""

    model: type[BaseModel]
    path: str
    heading: str
    env: str | None
    env_container: str | None


def settings_sections(model: type[BaseModel] = Settings) -> list[SectionDoc]:
    """Every table of ``model``, depth first in declaration order, with its keys."""
    sections: list[SectionDoc] = []
    _walk(
        _Nested(model, "", "Top-level keys", env=ENV_PREFIX, env_container=None),
        sections,
    )
    return sections


def _walk(nested: _Nested, sections: list[SectionDoc]) -> None:
    section = SectionDoc(
        path=nested.path,
        heading=nested.heading,
        anchor=_anchor(nested.path or "top-level"),
        doc=docstring(nested.model.__doc__),
    )
    sections.append(section)
    for name, info in nested.model.model_fields.items():
        path = f"{nested.path}.{name}" if nested.path else name
        env = None if nested.env is None else f"{nested.env}{name.upper()}"
        children = _children(info.annotation, path, env, nested.env_container)
        section.settings.append(
            SettingDoc(
                path=path,
                type=_describe_type(info.annotation) + _constraints(info),
                default=_default(info),
                description=_description(info),
                env=env,
                env_container=nested.env_container,
                json_in_env=_needs_json(info),
                anchor=_anchor(children[0].path) if children else None,
            )
        )
        for child in children:
            _walk(child, sections)


def _children(annotation: Any, path: str, env: str | None, container: str | None) -> list[_Nested]:
    """The models a field holds, directly, as list items or as values of a name-keyed
    table, with the env name their keys get (none below a list or a union of shapes)."""
    found: list[_Nested] = []
    for shape, model in _models_in(annotation):
        if shape == "direct":
            child_env = f"{env}__" if env is not None else None
            found.append(_Nested(model, path, code(f"[{path}]"), child_env, container))
        elif shape == "list":
            item_path = f"{path}[]"
            heading = code(f"[[{path}]]")
            found.append(_Nested(model, item_path, heading, None, container or env))
        else:  # a table keyed by name
            key = _KEY_NAMES.get(path.rsplit(".", 1)[-1].removesuffix("[]"), NAME)
            item_path = f"{path}.{key}"
            single = _is_plain_dict_of(annotation, model)
            child_env = f"{env}__{key.upper()}__" if env is not None and single else None
            child_container = container if child_env else (container or env)
            heading = code(f"[{item_path}]")
            found.append(_Nested(model, item_path, heading, child_env, child_container))
    return found


def _models_in(annotation: Any) -> list[tuple[Literal["direct", "list", "dict"], type[BaseModel]]]:
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [item for arg in typing.get_args(annotation) for item in _models_in(arg)]
    if origin is list:
        (item,) = typing.get_args(annotation)
        return [("list", model) for _, model in _models_in(item)]
    if origin is dict:
        _, value = typing.get_args(annotation)
        return [("dict", model) for _, model in _models_in(value)]
    if _is_model(annotation):
        return [("direct", annotation)]
    return []


def _is_plain_dict_of(annotation: Any, model: type[BaseModel]) -> bool:
    """``dict[str, Model]`` (keys in env names work), not ``dict[str, str | Model]``."""
    annotation = _unwrap(annotation)
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) is dict and args[1] is model


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _describe_type(annotation: Any) -> str:
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is None:
        return _describe_plain(annotation)
    if origin in (Union, types.UnionType):
        parts = [_describe_type(arg) for arg in args]
        return " or ".join(dict.fromkeys(part for part in parts if part != "none"))
    if origin is Literal:
        return "one of " + ", ".join(code(str(value)) for value in args)
    if origin is list:
        inner = _describe_type(args[0])
        return f"list of {_PLURAL.get(inner, inner.removeprefix('one of '))}"
    if origin is dict:
        return f"table (name → {_describe_type(args[1])})"
    return str(annotation)


def _describe_plain(annotation: Any) -> str:
    if annotation is type(None):
        return "none"
    if _is_model(annotation):
        return "table"
    return _SIMPLE.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _constraints(info: FieldInfo) -> str:
    bounds: list[str] = []
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            bounds.append(f"≥ {meta.ge}")
        elif isinstance(meta, annotated_types.Gt):
            bounds.append(f"> {meta.gt}")
        elif isinstance(meta, annotated_types.Le):
            bounds.append(f"≤ {meta.le}")
        elif isinstance(meta, annotated_types.Lt):
            bounds.append(f"< {meta.lt}")
        elif isinstance(meta, annotated_types.MinLen) and meta.min_length > 0:
            bounds.append(f"at least {meta.min_length}")
        elif isinstance(meta, annotated_types.MaxLen):
            bounds.append(f"at most {meta.max_length}")
        elif getattr(meta, "pattern", None):
            bounds.append("matching " + code(str(meta.pattern)))
    return f", {', '.join(bounds)}" if bounds else ""


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "(table)"
    return code(_toml(value))


def _toml(value: Any) -> str:
    """A default as it would be written in the TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + "}"
    return json.dumps(str(value))


def _description(info: FieldInfo) -> str:
    """The field's description; a table may fall back to its model's docstring."""
    if info.description:
        return info.description
    models = _models_in(info.annotation)
    if models:
        return (models[0][1].__doc__ or "").strip()
    return ""


def _needs_json(info: FieldInfo) -> bool:
    """Lists and tables are JSON in the environment, except ``NoDecode`` fields (their own
    validator splits a comma-separated list)."""
    if any(meta is NoDecode or isinstance(meta, NoDecode) for meta in _annotated_meta(info)):
        return False
    annotation = _unwrap(info.annotation)
    origins = {typing.get_origin(arg) for arg in _union_args(annotation)}
    return bool(origins & {list, dict}) or any(_is_model(arg) for arg in _union_args(annotation))


def _annotated_meta(info: FieldInfo) -> list[Any]:
    annotation = info.annotation
    found = list(info.metadata)
    while typing.get_origin(annotation) is typing.Annotated:
        found.extend(typing.get_args(annotation)[1:])
        annotation = typing.get_args(annotation)[0]
    return found


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _anchor(path: str) -> str:
    cleaned = "".join(char if char.isalnum() else "-" for char in path.lower())
    return "config-" + "-".join(part for part in cleaned.split("-") if part)


def _env_cell(setting: SettingDoc) -> str:
    if setting.env is not None:
        return code(setting.env) + (" (JSON)" if setting.json_in_env else "")
    if setting.env_container is not None:
        return f"in {code(setting.env_container)} (JSON)"
    return "—"


def _key_cell(setting: SettingDoc) -> str:
    key = code(setting.path)
    return f"[{key}](#{setting.anchor})" if setting.anchor else key


def undocumented(model: type[BaseModel] = Settings) -> list[str]:
    """Paths of the keys that would be published without a description."""
    return [
        setting.path
        for section in settings_sections(model)
        for setting in section.settings
        if not setting.description.strip()
    ]


def render_settings(model: type[BaseModel] = Settings) -> str:
    """The configuration reference: one section per table, one row per key."""
    parts: list[str] = []
    for section in settings_sections(model):
        parts.append(f"## {section.heading} {{#{section.anchor}}}")
        if section.doc:
            parts.append(section.doc)
        rows = [
            [
                _key_cell(setting),
                paragraph(setting.type),
                setting.default,
                _env_cell(setting),
                paragraph(setting.description),
            ]
            for setting in section.settings
        ]
        parts.append(table(["key", "type", "default", "environment", "description"], rows))
    return "\n\n".join(parts) + "\n"


def config_json_schema(model: type[BaseModel] = Settings) -> dict[str, Any]:
    """The JSON Schema of the TOML file (editors such as Taplo validate against it)."""
    schema = model.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Jobs Service configuration (JOBS_CONFIG_FILE)",
        **{key: value for key, value in schema.items() if key != "title"},
    }
