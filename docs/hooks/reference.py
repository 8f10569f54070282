"""mkdocs hook: the generated reference, built from the code on every site build.

Expands ``<!-- reference: NAME -->`` markers in pages (see ``jobs_service.reference``)
and publishes the configuration's JSON Schema as a file of the site, so the pages and
the schema an editor validates against cannot drift from the service that reads them.
Only glue lives here; the rendering is product code with its own tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mkdocs.structure.files import File

from jobs_service.reference import CONFIG_SCHEMA_FILE, Reference

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

_state: dict[str, Reference] = {}


def on_config(config: MkDocsConfig, **_: Any) -> MkDocsConfig:
    """A fresh reference per build, so nothing rendered by one build leaks into the next."""
    _state["reference"] = Reference()
    return config


def on_files(files: Files, config: MkDocsConfig, **_: Any) -> Files:
    """Add the JSON Schema, so pages can link to it and the strict check follows the link."""
    content = _state["reference"].config_schema_json()
    files.append(File.generated(config, CONFIG_SCHEMA_FILE, content=content))
    return files


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    """Replace each marker with its generated section."""
    return _state["reference"].expand(markdown, page.file.src_uri)
