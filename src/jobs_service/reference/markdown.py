"""Small Markdown helpers shared by the reference generators.

Docstrings and field descriptions in this code base use reStructuredText-ish markup
(````code````, ``:class:`Name```); the docs site is Markdown. Converting the handful of
forms we use keeps one source of truth for each sentence instead of two.
"""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Sequence

__all__ = ["code", "docstring", "paragraph", "table"]

_RST_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):`~?([^`]+)`")
_RST_LITERAL = re.compile(r"``(.+?)``")


def _rst_role(match: re.Match[str]) -> str:
    # Sphinx shows ``~a.b.Name`` as ``Name``; the short form reads better in a table too.
    return f"`{match.group(1).rsplit('.', 1)[-1]}`"


def docstring(text: str | None) -> str:
    """A docstring (or description) as Markdown: dedented, roles and literals converted,
    ``::`` literal blocks turned into fenced code."""
    if not text:
        return ""
    lines = inspect.cleandoc(text).splitlines()
    out: list[str] = []
    in_block = False
    for line in lines:
        if in_block:
            if line and not line.startswith(" "):
                _close_block(out)
                out.append("")
                in_block = False
            else:
                out.append(line[4:] if line.startswith("    ") else line)
                continue
        if line.rstrip().endswith("::"):
            stripped = line.rstrip()[:-1].rstrip(" :")
            out.append(_inline(stripped + ":") if stripped else "")
            out.extend(["", "```text"])
            in_block = True
            continue
        out.append(_inline(line))
    if in_block:
        _close_block(out)
    return _drop_blank_lines_after_fence("\n".join(out)).strip()


def _close_block(out: list[str]) -> None:
    while out and not out[-1].strip():
        out.pop()
    out.append("```")


def _drop_blank_lines_after_fence(text: str) -> str:
    return re.sub(r"```text\n\n+", "```text\n", text)


def _inline(line: str) -> str:
    converted = _RST_LITERAL.sub(r"`\1`", _RST_ROLE.sub(_rst_role, line))
    # Outside code, ``<name>`` would be taken for an HTML tag and vanish.
    return _outside_code(converted, lambda part: part.replace("<", "&lt;"))


def paragraph(text: str | None) -> str:
    """One line of text for a table cell: inline markup converted, whitespace folded,
    pipes escaped (a ``|`` would end the cell)."""
    return _escape_pipes(" ".join(docstring(text).split()))


def _escape_pipes(text: str) -> str:
    # Python-Markdown's tables skip pipes inside code spans, and show a backslash there.
    return _outside_code(text, lambda part: part.replace("|", "\\|"))


def _outside_code(text: str, change: Callable[[str], str]) -> str:
    parts = re.split(r"(`+[^`]*`+)", text)
    return "".join(part if part.startswith("`") else change(part) for part in parts)


def code(text: str) -> str:
    """An inline code span that survives backticks inside ``text`` (pipes need nothing:
    tables do not split cells inside code spans)."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, optional: Collection[str] = ()
) -> str:
    """A pipe table; cells must already be single-line (see :func:`paragraph`).

    A column named in ``optional`` is left out when none of its cells says anything, so a
    task whose arguments carry no descriptions does not get a column of blanks.
    """
    body = [list(row) for row in rows]
    keep = [
        index
        for index, header in enumerate(headers)
        if header not in optional or any(row[index].strip() for row in body)
    ]
    lines = [
        "| " + " | ".join(headers[index] for index in keep) + " |",
        "|" + "|".join("---" for _ in keep) + "|",
    ]
    lines.extend("| " + " | ".join(row[index] or " " for index in keep) + " |" for row in body)
    return "\n".join(lines)
