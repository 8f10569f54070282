"""A run's result as people read it: a Teams card, or HTML for mail, events and posts.

The content is markdown written by the domain, often quoting outside data (a lead's
name from a webhook, a ticket's title), and a title may hold a whole prompt. So:

- markdown is rendered by markdown-it-py (CommonMark, with tables and strikethrough)
  with raw HTML off: ``<img …>`` or ``<div …>`` in the content is shown as text, never
  passed into a mail sent from the company's mailbox; links and images keep only
  ``http``, ``https`` and ``mailto`` URLs (any other link becomes its text, any other
  image its alt text);
- what is rendered is bounded: the content is cut to a budget *before* it is rendered
  (Python takes seconds to render a 1 MB table), titles to :data:`MAX_TITLE_CHARS`, the
  counts a Teams message shows to :data:`TEAMS_FACTS`;
- a Teams message is measured whole — the encoded card, or the HTML, title and counts
  included — against what Teams accepts, and its content is cut until it fits.

Every cut says so in the message and points to the run, where the whole result is.
Rendering is plain CPU work; the delivery runs the HTML renderings in a thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from html import escape
from typing import TYPE_CHECKING

import orjson
from markdown_it import MarkdownIt

from jobs_service.agents.teams import adaptive_card

if TYPE_CHECKING:
    from collections.abc import Mapping

    from markdown_it.rules_core import StateCore
    from markdown_it.token import Token

    from jobs_service.agents.domain_api import Artifact

__all__ = [
    "MAIL_CONTENT_BYTES",
    "MAX_TITLE_CHARS",
    "TEAMS_CARD_BYTES",
    "TEAMS_CONTENT_BYTES",
    "TEAMS_FACTS",
    "TEAMS_HTML_BYTES",
    "RunResult",
    "capped",
    "fitted_for_teams",
    "mail_html",
    "render_html",
    "render_markdown",
    "teams_card",
    "teams_html",
]

#: A title (a card's heading, a mail's or event's default subject) at most, in
#: characters: Outlook cuts subjects at 255, and a title is a line, not a report.
MAX_TITLE_CHARS = 255
#: Content sent to Teams at most, in UTF-8 bytes, before the whole message is measured.
TEAMS_CONTENT_BYTES = 16_000
#: A Teams Workflows message (the card, encoded as sent) at most, in bytes: Teams
#: refuses messages over about 28 KB, and a refusal fails the run after the domain's
#: work was done.
TEAMS_CARD_BYTES = 24_000
#: A Teams channel message sent through Graph (HTML) at most, in UTF-8 bytes.
TEAMS_HTML_BYTES = 24_000
#: Counts a Teams message shows at most; the message says how many more the run has.
TEAMS_FACTS = 25
#: Content rendered into a mail or calendar event at most, in UTF-8 bytes: rendering
#: costs about 10 ms per KB, and a larger body only nears Graph's 4 MB request limit.
MAIL_CONTENT_BYTES = 100_000
#: A count's name shown in a Teams message at most, in characters.
_FACT_NAME_CHARS = 100
#: Passes of measuring and cutting before a Teams message keeps no content at all.
_FITTING_PASSES = 8
_SAFE_URL = re.compile(r"(?:https?|mailto):", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run produced, as delivered."""

    run_id: str
    title: str
    summary: Mapping[str, int]
    content: str | None = None
    artifacts: tuple[Artifact, ...] = ()


def capped(text: str, limit: int) -> str:
    """``text``, or its first ``limit - 1`` characters and an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fitted_for_teams(result: RunResult) -> RunResult:
    """The result with its content cut to :data:`TEAMS_CONTENT_BYTES`, saying so."""
    return _within(result, TEAMS_CONTENT_BYTES, "a Teams message")


def teams_card(result: RunResult) -> bytes:
    """The Teams Workflows message for ``result``, encoded, within
    :data:`TEAMS_CARD_BYTES`: the title capped, at most :data:`TEAMS_FACTS` counts, and
    the content cut by what the whole card is over (JSON escapes make a cut of ``n``
    bytes of content shrink the card by ``n`` bytes at least)."""
    title = capped(result.title, MAX_TITLE_CHARS)
    facts, more = _facts(result, TEAMS_FACTS)
    limit = TEAMS_CONTENT_BYTES
    size = _size(result.content)
    while True:
        text = _within(result, limit, "a Teams message").content
        message = orjson.dumps(adaptive_card(title, text, facts, more))
        over = len(message) - TEAMS_CARD_BYTES
        if over <= 0 or limit == 0:
            return message
        limit = max(min(limit, size) - over, 0)


def teams_html(result: RunResult) -> str:
    """:func:`render_html` for a Teams channel post, within :data:`TEAMS_HTML_BYTES`.

    Markdown grows several times over as HTML (a table, escaped text), so the content
    is cut to what the measured growth leaves room for, a little less, and measured
    again; a few passes at most, each rendering no more than
    :data:`TEAMS_CONTENT_BYTES`.
    """
    limit = min(TEAMS_CONTENT_BYTES, _size(result.content))
    for _ in range(_FITTING_PASSES):
        html = render_html(_within(result, limit, "a Teams message"), max_facts=TEAMS_FACTS)
        size = len(html.encode())
        if size <= TEAMS_HTML_BYTES or limit == 0:
            return html
        limit = int(limit * TEAMS_HTML_BYTES / size * 0.9)
    return render_html(_within(result, 0, "a Teams message"), max_facts=TEAMS_FACTS)


def mail_html(result: RunResult) -> str:
    """:func:`render_html` for a mail or calendar event: content up to
    :data:`MAIL_CONTENT_BYTES`, every count."""
    return render_html(_within(result, MAIL_CONTENT_BYTES, "an email"))


def render_html(result: RunResult, *, max_facts: int | None = None) -> str:
    """The result as HTML: the title, the content, the counts (the first ``max_facts``
    of them, saying how many more there are), the run id."""
    parts = [f"<h2>{escape(capped(result.title, MAX_TITLE_CHARS))}</h2>"]
    if result.content:
        parts.append(render_markdown(result.content))
    facts, more = _facts(result, max_facts)
    if facts:
        rows = "".join(f"<tr><td>{escape(name)}</td><td>{value}</td></tr>" for name, value in facts)
        parts.append(f"<table>{rows}</table>")
    if more:
        parts.append(f"<p><em>{escape(more)}</em></p>")
    parts.append(f"<p><small>Run {escape(result.run_id)}</small></p>")
    return "\n".join(parts)


def render_markdown(content: str) -> str:
    """``content`` as HTML: raw HTML shown as text, only http(s) and mailto links."""
    html: str = _MARKDOWN.render(content)  # typed Any: a renderer may be swapped
    return html


def _within(result: RunResult, limit: int, medium: str) -> RunResult:
    """``result`` with its content cut to ``limit`` UTF-8 bytes (never mid-character)
    and a note saying where the whole of it is; as it is if it fits."""
    content = result.content
    if content is None or _size(content) <= limit:
        return result
    kept = content.encode()[:limit].decode(errors="ignore")
    note = f"*(cut to fit {medium}: the whole result is on run {result.run_id})*"
    return replace(result, content=f"{kept}\n\n{note}" if kept else note)


def _size(content: str | None) -> int:
    if content is None:
        return 0
    # Cheap bounds first: a character is 1 to 4 bytes in UTF-8.
    return len(content) if content.isascii() else len(content.encode())


def _facts(result: RunResult, limit: int | None) -> tuple[list[tuple[str, str]], str | None]:
    """The counts to show (names capped) and, when some are left out, a line saying so."""
    items = list(result.summary.items())
    shown = items if limit is None else items[:limit]
    facts = [(capped(name, _FACT_NAME_CHARS), str(value)) for name, value in shown]
    hidden = len(items) - len(shown)
    if not hidden:
        return facts, None
    noun = "count" if hidden == 1 else "counts"
    return facts, f"{hidden} more {noun}: the whole summary is on run {result.run_id}"


class _Markdown(MarkdownIt):
    """CommonMark with tables and strikethrough, raw HTML off, only safe URLs kept."""

    def __init__(self) -> None:
        super().__init__("commonmark", {"html": False, "linkify": False, "typographer": False})
        self.enable(["table", "strikethrough"])
        self.core.ruler.after("inline", "safe_urls", _keep_safe_urls)

    def validateLink(self, url: str) -> bool:  # noqa: N802 - markdown-it's name
        """Every link is parsed as one (so none is left as markdown text, its URL
        shown); :func:`_keep_safe_urls` then decides which stay links."""
        del url
        return True


def _safe(url: object) -> bool:
    return isinstance(url, str) and _SAFE_URL.match(url) is not None


def _keep_safe_urls(state: StateCore) -> None:
    """Unlink links to anything but http(s) and mailto (``javascript:``, ``data:``,
    relative paths that mean nothing in a mail): their text stays. An image with such
    a source becomes its alt text."""
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        kept: list[Token] = []
        dropped: list[bool] = []  # per open link: whether it was dropped
        for token in block.children:
            if token.type == "link_open":
                dropped.append(not _safe(token.attrGet("href")))
                if dropped[-1]:
                    continue
            elif token.type == "link_close" and dropped:
                if dropped.pop():
                    continue
            elif token.type == "image" and not _safe(token.attrGet("src")):
                kept.extend(token.children or ())
                continue
            kept.append(token)
        block.children = kept


_MARKDOWN = _Markdown()
