"""Reference documentation generated from the code: settings, tasks and the HTTP API.

The docs site expands ``<!-- reference: NAME -->`` markers in its pages with these
renderings when it is built (``docs/hooks/reference.py``), so the reference cannot drift
from the code it describes, and the tests walk the same data to prove that nothing is
left out. Nothing here imports mkdocs: the renderers return Markdown strings.
"""

from __future__ import annotations

from jobs_service.reference.http import render_http_reference
from jobs_service.reference.pages import CONFIG_SCHEMA_FILE, Reference, UnknownMarkerError
from jobs_service.reference.settings import config_json_schema, render_settings, settings_sections
from jobs_service.reference.tasks import render_task_catalog

__all__ = [
    "CONFIG_SCHEMA_FILE",
    "Reference",
    "UnknownMarkerError",
    "config_json_schema",
    "render_http_reference",
    "render_settings",
    "render_task_catalog",
    "settings_sections",
]
