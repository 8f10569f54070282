"""Markers in docs pages expand to the generated sections, with working links."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from jobs_service.reference.pages import (
    CONFIG_SCHEMA_FILE,
    MARKER,
    Reference,
    UnknownMarkerError,
    relative_link,
)
from jobs_service.tasks.registry import TaskInfo

REFERENCE = Reference()
DOCS = Path(__file__).parents[3] / "docs"


@pytest.mark.parametrize(
    ("page", "marker"),
    [
        ("reference/configuration.md", "settings"),
        ("reference/tasks.md", "tasks"),
        ("reference/http.md", "http"),
    ],
)
def test_the_reference_pages_carry_their_markers(page: str, marker: str) -> None:
    """The site publishes each generated section (the coverage tests check the section)."""
    found = [match["name"] for match in MARKER.finditer((DOCS / page).read_text())]
    assert marker in found


def test_every_marker_in_the_docs_is_known() -> None:
    """A typo in a page fails here before it fails the site build."""
    found = {
        match["name"] for path in DOCS.rglob("*.md") for match in MARKER.finditer(path.read_text())
    }
    assert found
    assert found <= set(REFERENCE.names)


def test_markers_are_replaced_and_the_rest_is_kept() -> None:
    """Only the marker line changes; prose around it stays."""
    page = "# Tasks\n\nIntro.\n\n<!-- reference: tasks -->\n\nOutro.\n"
    expanded = REFERENCE.expand(page, "reference/tasks.md")
    assert expanded.startswith("# Tasks\n\nIntro.\n\n| task |")
    assert expanded.endswith("\n\nOutro.\n")
    assert "<!--" not in expanded


def test_an_unknown_marker_fails_the_build_naming_the_page() -> None:
    """A typo would otherwise publish the page without its reference."""
    with pytest.raises(UnknownMarkerError, match=r"reference/x\.md: .*'task'.*known: settings"):
        REFERENCE.expand("<!-- reference: task -->\n", "reference/x.md")


def test_markers_inside_a_line_are_not_expanded() -> None:
    """A marker quoted in prose is an example, not a placeholder."""
    text = "Write `<!-- reference: tasks -->` on its own line.\n"
    assert REFERENCE.expand(text, "index.md") == text


@pytest.mark.parametrize(
    ("page", "target", "expected"),
    [
        ("api.md", "reference/http.md", "reference/http.md"),
        ("reference/http.md", "api.md#errors", "../api.md#errors"),
        ("reference/http.md", "reference/http.md", ""),
        ("reference/http.md", "reference/http.md#get-health", "#get-health"),
        ("reference/tasks.md", "reference/http.md#x", "http.md#x"),
    ],
)
def test_links_are_relative_to_the_page(page: str, target: str, expected: str) -> None:
    """mkdocs resolves links from the page they are on."""
    assert relative_link(page, target) == expected


def test_the_endpoint_index_links_into_the_reference_from_anywhere() -> None:
    """The index on the API guide and on the reference page reach the same anchors."""
    on_guide = REFERENCE.render("http-index", "api.md")
    on_reference = REFERENCE.render("http-index", "reference/http.md")
    assert "](reference/http.md#get-health)" in on_guide
    assert "](#get-health)" in on_reference


@pytest.mark.parametrize("name", [name for name in REFERENCE.names if name != "http-index"])
def test_every_section_links_only_to_anchors_it_defines(name: str) -> None:
    """Links within a generated section land on a heading of that section (the index
    links into the full HTTP reference, whose anchors are checked with it)."""
    text = REFERENCE.render(name, "reference/page.md")
    anchors = set(re.findall(r"\{#([^}]+)\}", text))
    assert set(re.findall(r"\]\(#([^)]+)\)", text)) <= anchors


def test_sources_are_read_once_per_reference() -> None:
    """A build expands several pages; the registry is asked once."""
    calls: list[int] = []

    def tasks() -> list[TaskInfo]:
        calls.append(1)
        return []

    reference = Reference(tasks=tasks)
    reference.render("tasks", "a.md")
    reference.render("tasks", "b.md")
    assert calls == [1]


def test_the_published_schema_is_json_beside_the_configuration_page() -> None:
    """The file the configuration page links to is the settings' JSON Schema."""
    assert CONFIG_SCHEMA_FILE == "reference/jobs-config.schema.json"
    schema = json.loads(REFERENCE.config_schema_json())
    assert schema == REFERENCE.config_schema()
    assert "api_keys" in schema["properties"]
