"""Rendering a run's result: markdown without raw HTML or unsafe links, bounded sizes."""

from __future__ import annotations

import orjson
import pytest

from jobs_service.agents.rendering import (
    MAIL_CONTENT_BYTES,
    MAX_TITLE_CHARS,
    TEAMS_CARD_BYTES,
    TEAMS_FACTS,
    TEAMS_HTML_BYTES,
    RunResult,
    mail_html,
    render_markdown,
    teams_card,
    teams_html,
)


def test_the_promised_markdown_still_renders() -> None:
    """Tables, emphasis, lists, code (inline and fenced) and links, as the docs say."""
    html = render_markdown(
        "## KPIs\n\n| region | signups |\n|---|---:|\n| EU | **12** |\n\n"
        "- *one*\n- ~~two~~\n\n1. first\n\n`a < b` and [the report](https://example.com/r?a=1&b=2)"
        "\n\n```python\nif a < b:\n    pass\n```\n"
    )
    assert "<h2>KPIs</h2>" in html
    assert "<table>" in html
    assert '<td style="text-align:right"><strong>12</strong></td>' in html
    assert "<li><em>one</em></li>" in html
    assert "<li><s>two</s></li>" in html
    assert "<ol>" in html
    assert "<code>a &lt; b</code>" in html
    assert '<a href="https://example.com/r?a=1&amp;b=2">the report</a>' in html
    assert '<pre><code class="language-python">if a &lt; b:' in html


def test_raw_html_is_shown_as_text() -> None:
    """Inline and block HTML (a tracking pixel, a hidden div, a script) is escaped, so a
    reader sees it as text and the mail carries none of it."""
    html = render_markdown(
        'Lead: <img src="https://tracker.example/p.gif"> <a href="https://evil.example">x</a>'
        '\n\n<div style="display:none">\n\n<script>alert(1)</script>\n'
    )
    assert "<img" not in html
    assert "<a href" not in html
    assert "<div" not in html
    assert "<script" not in html
    assert "&lt;img src=&quot;https://tracker.example/p.gif&quot;&gt;" in html
    assert "&lt;div style=&quot;display:none&quot;&gt;" in html


@pytest.mark.parametrize(
    ("markdown", "shown", "absent"),
    [
        ("[details](javascript:alert(document.cookie))", "<p>details</p>", "javascript"),
        ("[details](JaVaScRiPt:alert(1))", "<p>details</p>", "alert"),
        ("[x](vbscript:msgbox)", "<p>x</p>", "vbscript"),
        ("[x](data:text/html;base64,PHNjcmlwdD4=)", "<p>x</p>", "data:"),
        ("[x](/internal/path)", "<p>x</p>", "href"),
        ("![a *chart*](data:image/png;base64,AAAA)", "<p>a <em>chart</em></p>", "<img"),
        ("![pixel](file:///etc/passwd)", "<p>pixel</p>", "file:"),
    ],
)
def test_links_and_images_to_other_schemes_keep_only_their_text(
    markdown: str, shown: str, absent: str
) -> None:
    """Only http, https and mailto URLs stay links or images; any other link is its text
    (not left as markdown showing the URL), any other image its alt text."""
    html = render_markdown(markdown)
    assert html.strip() == shown
    assert absent not in html


def test_safe_links_autolinks_and_images_are_kept() -> None:
    """http(s) and mailto links, autolinks and images stay; an autolink to another
    scheme is plain text; code spans keep their angle brackets as text."""
    html = render_markdown(
        "<https://example.com/a?b=1&c=2> <mailto:ops@example.com> <javascript:alert(1)> "
        "[mail](mailto:ops@example.com) ![chart](https://example.com/c.png) `<b>bold</b>`"
    )
    assert '<a href="https://example.com/a?b=1&amp;c=2">https://example.com/a?b=1&amp;c=2</a>' in (
        html
    )
    assert '<a href="mailto:ops@example.com">mailto:ops@example.com</a>' in html
    assert '<a href="mailto:ops@example.com">mail</a>' in html
    assert '<img src="https://example.com/c.png" alt="chart" />' in html
    assert " javascript:alert(1) " in html
    assert 'href="javascript' not in html
    assert "<code>&lt;b&gt;bold&lt;/b&gt;</code>" in html


def test_a_long_title_is_cut_with_an_ellipsis() -> None:
    """A title holding a whole prompt is cut to 255 characters in the HTML and the card."""
    result = RunResult("run-1", "kpi: " + "word " * 1000, {"errors": 0})
    card = orjson.loads(teams_card(result))
    title = card["attachments"][0]["content"]["body"][0]["text"]
    assert len(title) == MAX_TITLE_CHARS
    assert title.endswith("…")
    assert f"<h2>{title}</h2>" in teams_html(result)


def test_many_counts_are_capped_in_a_teams_message_which_says_how_many_more() -> None:
    """A summary with 400 counts (long names) fits a card and a Graph post: the first
    25 are shown, then a line says how many more the run holds; a mail shows all."""
    summary = {f"region {i:03} " + "x" * 300: i for i in range(400)} | {"errors": 0}
    result = RunResult("run-2", "counts", summary, "report")
    encoded = teams_card(result)
    body = orjson.loads(encoded)["attachments"][0]["content"]["body"]
    facts = next(block["facts"] for block in body if block["type"] == "FactSet")
    assert len(encoded) <= TEAMS_CARD_BYTES
    assert len(facts) == TEAMS_FACTS
    assert all(len(fact["title"]) <= 100 for fact in facts)
    assert body[-1]["text"] == "376 more counts: the whole summary is on run run-2"
    html = teams_html(result)
    assert len(html.encode()) <= TEAMS_HTML_BYTES
    assert html.count("<tr>") == TEAMS_FACTS
    assert "376 more counts: the whole summary is on run run-2" in html
    assert mail_html(result).count("<tr>") == 401


def test_the_whole_card_is_measured_not_only_the_content() -> None:
    """Content of 16 KB (the content budget) full of characters JSON escapes (quotes,
    newlines) is cut further until the encoded card fits, and says so."""
    content = '"quoted"\n' * 3_000  # 27 KB, 33 KB once escaped
    encoded = teams_card(RunResult("run-3", "report", {"errors": 0}, content))
    text = orjson.loads(encoded)["attachments"][0]["content"]["body"][1]["text"]
    assert len(encoded) <= TEAMS_CARD_BYTES
    assert len(encoded) > 20_000  # still most of what fits
    assert text.endswith("*(cut to fit a Teams message: the whole result is on run run-3)*")


def test_a_mail_renders_at_most_its_content_budget() -> None:
    """A 1 MB report is cut to about 100 KB before it is rendered, saying so: rendering
    cost is bounded, and the body stays well under Graph's request limit."""
    table = "| name | count |\n|---|---|\n" + "| <x&y> **b** | 1 |\n" * 50_000
    html = mail_html(RunResult("run-4", "report", {"errors": 0}, table))
    rows = html.count("<tr>")
    assert 4_000 < rows < MAIL_CONTENT_BYTES // 19
    assert "cut to fit an email: the whole result is on run run-4" in html
