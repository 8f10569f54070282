"""The markers pages of the docs site use, and what each expands to.

A page says ``<!-- reference: tasks -->`` where a generated section belongs, and
:meth:`Reference.expand` replaces the marker when the site is built. An unknown marker
is an error: left alone it would be an HTML comment, and the page would be published
without its reference and without anyone noticing.

Links between the generated sections and the hand-written pages are made relative to
the page being expanded, so a section can be placed on any page and mkdocs' strict link
check still follows every link.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import TYPE_CHECKING, Any

from jobs_service.core.settings import Settings
from jobs_service.reference.http import render_endpoint_index, render_http_reference
from jobs_service.reference.settings import config_json_schema, render_settings
from jobs_service.reference.tasks import render_task_catalog
from jobs_service.tasks.registry import list_tasks

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from fastapi import FastAPI
    from pydantic import BaseModel

    from jobs_service.tasks.registry import TaskInfo

__all__ = [
    "CONFIG_SCHEMA_FILE",
    "HTTP_PAGE",
    "MARKER",
    "PROBLEM_TYPES",
    "Reference",
    "UnknownMarkerError",
    "relative_link",
]

MARKER = re.compile(r"^<!--\s*reference:\s*(?P<name>[\w-]+)\s*-->[ \t]*$", re.MULTILINE)
#: The page holding the full HTTP reference, which the endpoint index links into.
HTTP_PAGE = "reference/http.md"
#: Where the problem ``type`` URNs are explained (hand-written: they are prose).
PROBLEM_TYPES = "api.md#errors"
#: Where the build publishes the configuration's JSON Schema, beside its reference page.
CONFIG_SCHEMA_FILE = "reference/jobs-config.schema.json"


class UnknownMarkerError(ValueError):
    """A page names a reference section that does not exist."""

    def __init__(self, name: str, page: str, known: Sequence[str]) -> None:
        super().__init__(f"{page}: unknown reference marker {name!r}; known: {', '.join(known)}")
        self.name = name
        self.page = page


def relative_link(page: str, target: str) -> str:
    """``target`` (``dir/page.md#anchor``, from the docs root) as seen from ``page``;
    on ``page`` itself just the anchor (``""`` for the page: a prefix for anchors)."""
    path, _, anchor = target.partition("#")
    if path == page:
        return f"#{anchor}" if anchor else ""
    link = posixpath.relpath(path, posixpath.dirname(page) or ".")
    return f"{link}#{anchor}" if anchor else link


def _registered_tasks() -> list[TaskInfo]:
    # Importing the broker registers the built-in tasks and those of JOBS_TASK_MODULES,
    # so a deployment building its own docs sees its own catalog.
    from jobs_service.broker import broker  # noqa: PLC0415 - registers tasks on import

    return list_tasks(broker)


def _gateway_app() -> FastAPI:
    from jobs_service.broker import broker  # noqa: PLC0415 - registers tasks on import
    from jobs_service.gateway.app import create_app  # noqa: PLC0415 - imports the broker

    # Defaults, not the environment: routes do not depend on settings, and a developer's
    # JOBS_CONFIG_FILE must not be able to break (or change) the published reference.
    return create_app(Settings.model_construct(), broker=broker, announce=False)


class Reference:
    """Renders the generated sections; one instance serves a whole site build.

    The task registry and the gateway app are built on first use and kept, because a
    build expands several pages and importing the broker is the slow part. Tests pass
    their own sources.
    """

    def __init__(
        self,
        *,
        settings_model: type[BaseModel] = Settings,
        tasks: Callable[[], list[TaskInfo]] = _registered_tasks,
        app: Callable[[], FastAPI] = _gateway_app,
    ) -> None:
        self._settings_model = settings_model
        self._tasks_source = tasks
        self._app_source = app
        self._tasks: list[TaskInfo] | None = None
        self._app: FastAPI | None = None
        self._renderers: dict[str, Callable[[str], str]] = {
            "settings": lambda _page: render_settings(self._settings_model),
            "tasks": lambda _page: render_task_catalog(self.tasks()),
            "http": lambda page: render_http_reference(
                self.app(), problem_types=relative_link(page, PROBLEM_TYPES)
            ),
            "http-index": lambda page: render_endpoint_index(
                self.app(), relative_link(page, HTTP_PAGE)
            ),
        }

    @property
    def names(self) -> tuple[str, ...]:
        """The markers this reference knows."""
        return tuple(self._renderers)

    def tasks(self) -> list[TaskInfo]:
        """The registered tasks the catalog lists."""
        if self._tasks is None:
            self._tasks = self._tasks_source()
        return self._tasks

    def app(self) -> FastAPI:
        """The gateway whose OpenAPI schema the HTTP reference reads."""
        if self._app is None:
            self._app = self._app_source()
        return self._app

    def render(self, name: str, page: str) -> str:
        """The Markdown of section ``name`` as placed on ``page`` (a docs-relative path)."""
        renderer = self._renderers.get(name)
        if renderer is None:
            raise UnknownMarkerError(name, page, self.names)
        return renderer(page)

    def expand(self, markdown: str, page: str) -> str:
        """``markdown`` with every marker replaced by its section."""
        return MARKER.sub(lambda match: self.render(match["name"], page), markdown)

    def config_schema(self) -> dict[str, Any]:
        """The JSON Schema of the TOML configuration file."""
        return config_json_schema(self._settings_model)

    def config_schema_json(self) -> str:
        """:meth:`config_schema` as the published file's text."""
        return json.dumps(self.config_schema(), indent=2, ensure_ascii=False) + "\n"
