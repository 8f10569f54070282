"""Docstring markup becomes Markdown that survives tables."""

from __future__ import annotations

from jobs_service.reference.markdown import code, docstring, paragraph, table


def test_rst_roles_and_literals_become_code_spans() -> None:
    """``x`` and :class:`a.b.Name` read as `x` and `Name`."""
    text = "Uses ``limit`` and :class:`~jobs_service.client.JobsClient`."
    assert docstring(text) == "Uses `limit` and `JobsClient`."


def test_literal_blocks_become_fenced_code() -> None:
    """A ``::`` paragraph ends in a colon and its indented block is fenced."""
    text = """Shape::

        {"a": 1}
        {"b": 2}

    After."""
    assert docstring(text) == 'Shape:\n\n```text\n{"a": 1}\n{"b": 2}\n```\n\nAfter.'


def test_angle_brackets_outside_code_are_escaped() -> None:
    """``<name>`` in prose would be swallowed as an HTML tag; in code it stays."""
    assert docstring("POST /webhooks/<name> or `<name>`") == "POST /webhooks/&lt;name> or `<name>`"


def test_paragraph_folds_lines_and_escapes_pipes_outside_code() -> None:
    """A table cell is one line, and a pipe in prose must not end it."""
    assert paragraph("a |\n b `x | y`") == "a \\| b `x | y`"
    assert paragraph(None) == ""


def test_code_spans_survive_backticks() -> None:
    """A value containing a backtick gets a longer fence."""
    assert code("a") == "`a`"
    assert code("a`b") == "``a`b``"
    assert code("`a") == "`` `a ``"


def test_optional_columns_are_dropped_only_when_empty() -> None:
    """An optional column stays as soon as one row says something in it."""
    empty = table(["name", "note"], [["a", ""], ["b", " "]], optional={"note"})
    assert empty == "| name |\n|---|\n| a |\n| b |"
    kept = table(["name", "note"], [["a", ""], ["b", "x"]], optional={"note"})
    assert kept == "| name | note |\n|---|---|\n| a |   |\n| b | x |"
