"""The worked example on each webhook scheme page of the docs is real, not illustrative.

Every page ``docs/webhooks/<scheme>.md`` carries its example in fenced blocks, each
preceded by a marker comment ``<!-- example: NAME -->``:

- ``config``: the ``[webhooks.sources.<name>]`` TOML, loaded as the product loads it;
- ``body``: the exact request body;
- ``headers``: the request's signature headers, ``Name: value`` per line;
- ``signed`` (signing schemes): the exact string the MAC is computed over;
- ``sign`` (signing schemes): a Python snippet that prints the signature header(s);
- ``stored``: the event id and type the gateway derives from the request;
- ``curl``: the command that sends it.

These tests run the example through the product's own verifier and event splitting, so
a page whose values, headers or command drift from the code fails the build.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path
from typing import Any, get_args
from urllib.parse import parse_qs, urlsplit

import pytest

from jobs_service.core.settings import Settings, WebhookScheme, WebhookSource
from jobs_service.gateway.app import build_webhook_schemes
from jobs_service.webhooks.events import split_events
from jobs_service.webhooks.verification import Scheme, VerificationError

PAGES = Path(__file__).resolve().parents[3] / "docs" / "webhooks"
SCHEMES: tuple[str, ...] = get_args(WebhookScheme)
#: ``now`` for schemes that sign no timestamp (any value must do).
UNTIMED_NOW = 1_767_225_600.0
_BLOCK = re.compile(r"<!-- example: (?P<name>[a-z-]+) -->\n```[a-z]*\n(?P<text>.*?)\n```", re.S)


def _blocks(scheme: str) -> dict[str, str]:
    text = (PAGES / f"{scheme}.md").read_text(encoding="utf-8")
    found: dict[str, str] = {}
    for match in _BLOCK.finditer(text):
        name = match["name"]
        assert name not in found, f"{scheme}.md: two '{name}' example blocks"
        found[name] = match["text"]
    return found


def _source(blocks: dict[str, str], tmp_path: Path) -> tuple[str, WebhookSource, Scheme]:
    path = tmp_path / "jobs.toml"
    path.write_text(blocks["config"], encoding="utf-8")
    settings = Settings.load(path)
    ((name, source),) = settings.webhooks.sources.items()
    return name, source, build_webhook_schemes(settings)[name]


def _headers(blocks: dict[str, str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in blocks.get("headers", "").splitlines():
        name, colon, value = line.partition(": ")
        assert colon, f"header line without ': ': {line!r}"
        headers[name] = value
    return headers


def _now(headers: dict[str, str]) -> float:
    lowered = {name.lower(): value for name, value in headers.items()}
    if "webhook-timestamp" in lowered:
        return float(lowered["webhook-timestamp"])
    if "stripe-signature" in lowered:
        items = dict(item.split("=", 1) for item in lowered["stripe-signature"].split(","))
        return float(items["t"])
    return UNTIMED_NOW


def _curl(command: str) -> tuple[str, dict[str, str], str | None]:
    """The URL, headers and body of a ``curl`` command line."""
    words = shlex.split(command.replace("\\\n", " "))
    assert words[0] == "curl"
    url, body, headers = "", None, {}
    position = 1
    while position < len(words):
        word = words[position]
        if word in ("-H", "--header"):
            name, _, value = words[position + 1].partition(": ")
            headers[name] = value
            position += 2
        elif word in ("--data-raw", "--data-binary", "-d"):
            body = words[position + 1]
            position += 2
        elif word == "-X":
            assert words[position + 1] == "POST"
            position += 2
        elif word.startswith("-"):
            position += 1
        else:
            url = word
            position += 1
    return url, headers, body


def _signed_message(scheme: str, headers: dict[str, str], body: str) -> str:
    """What each scheme's page must say is signed, from the request itself."""
    lowered = {name.lower(): value for name, value in headers.items()}
    if scheme == "standard":
        return f"{lowered['webhook-id']}.{lowered['webhook-timestamp']}.{body}"
    if scheme == "stripe":
        return f"{int(_now(headers))}.{body}"
    return body


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_has_a_page_with_a_complete_example(scheme: str) -> None:
    """Each configurable scheme has its page, and the page has every example block."""
    blocks = _blocks(scheme)
    required = {"config", "body", "stored", "curl"}
    if scheme not in ("graph", "none"):
        required |= {"headers", "signed", "sign"}
    assert required <= blocks.keys(), f"{scheme}.md lacks {sorted(required - blocks.keys())}"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_example_request_passes_the_products_verifier(scheme: str, tmp_path: Path) -> None:
    """The documented secret, body and headers are accepted by the scheme the config builds."""
    blocks = _blocks(scheme)
    _, source, verifier = _source(blocks, tmp_path)
    assert source.scheme == scheme
    headers = _headers(blocks)
    verifier.verify(blocks["body"].encode(), headers, now=_now(headers))


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "none"])
def test_a_changed_body_is_refused(scheme: str, tmp_path: Path) -> None:
    """The example is not accepted vacuously: one changed byte of the body is refused."""
    blocks = _blocks(scheme)
    _, _, verifier = _source(blocks, tmp_path)
    headers = _headers(blocks)
    body = blocks["body"]
    if scheme == "graph":  # nothing is signed: the secret is the clientState itself
        tampered = body.replace('"clientState":"', '"clientState":"x', 1)
    else:
        tampered = body.replace("{", "{ ", 1)
    assert tampered != body
    with pytest.raises(VerificationError) as refused:
        verifier.verify(tampered.encode(), headers, now=_now(headers))
    assert refused.value.reason in ("bad_signature", "bad_client_state")


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s not in ("graph", "none")])
def test_the_signed_string_and_the_snippet_agree_with_the_headers(scheme: str) -> None:
    """The page's 'string signed' is the scheme's, and its snippet prints the header shown."""
    blocks = _blocks(scheme)
    headers = _headers(blocks)
    assert blocks["signed"] == _signed_message(scheme, headers, blocks["body"])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(blocks["sign"], f"{scheme}.md", "exec"), {})  # noqa: S102 - our own docs
    header_lines = set(blocks["headers"].splitlines())
    lines = printed.getvalue().splitlines()
    assert lines
    assert set(lines) <= header_lines, f"the snippet printed {lines}"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_stored_event_id_and_type_are_what_the_gateway_derives(
    scheme: str, tmp_path: Path
) -> None:
    """The event id and type the page promises are those split_events derives."""
    blocks = _blocks(scheme)
    _, source, verifier = _source(blocks, tmp_path)
    headers = _headers(blocks)
    body = blocks["body"].encode()
    verified = verifier.verify(body, headers, now=_now(headers))
    lowered = {name.lower(): value for name, value in headers.items()}
    events = split_events(source, body, lowered, verified)
    stored: Any = json.loads(blocks["stored"])
    expected = stored if isinstance(stored, list) else [stored]
    assert [{"external_id": e.external_id, "event_type": e.event_type} for e in events] == expected


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_curl_command_sends_the_example(scheme: str, tmp_path: Path) -> None:
    """The curl command posts the example body with the example headers to the source."""
    blocks = _blocks(scheme)
    name, _, _ = _source(blocks, tmp_path)
    url, sent_headers, sent_body = _curl(blocks["curl"])
    assert urlsplit(url).path == f"/webhooks/{name}"
    assert sent_body == blocks["body"]
    lowered = {key.lower(): value for key, value in sent_headers.items()}
    assert lowered.pop("content-type") == "application/json"
    assert lowered == {key.lower(): value for key, value in _headers(blocks).items()}


def test_the_graph_handshake_command_carries_a_validation_token(tmp_path: Path) -> None:
    """The Graph page's handshake posts validationToken to the same source."""
    blocks = _blocks("graph")
    name, _, _ = _source(blocks, tmp_path)
    url, _, body = _curl(blocks["handshake"])
    parts = urlsplit(url)
    assert parts.path == f"/webhooks/{name}"
    assert parse_qs(parts.query)["validationToken"] == [blocks["handshake-answer"]]
    assert body is None


def test_signatures_quoted_in_the_prose_are_real_too(tmp_path: Path) -> None:
    """Values given in passing (the base64 form, GitHub's own vector) verify as well."""
    hmac_page = (PAGES / "hmac-sha256.md").read_text(encoding="utf-8")
    blocks = _blocks("hmac-sha256")
    _, _, verifier = _source(blocks, tmp_path)
    quoted = re.findall(r"`X-Signature: ([A-Za-z0-9+/=]{44})`", hmac_page)
    assert quoted, "the base64 form is no longer quoted on the hmac-sha256 page"
    for value in quoted:
        verifier.verify(blocks["body"].encode(), {"X-Signature": value}, now=UNTIMED_NOW)

    github_page = (PAGES / "github.md").read_text(encoding="utf-8")
    vector = re.search(
        r"secret `(?P<secret>[^`]+)`, body\n?`(?P<body>[^`]+)` → "
        r"`(?P<signature>sha256=[0-9a-f]{64})`",
        github_page,
    )
    assert vector is not None, "GitHub's test vector is no longer on the github page"
    github = build_webhook_schemes(
        Settings(webhooks={"sources": {"gh": {"scheme": "github", "secrets": [vector["secret"]]}}})
    )["gh"]
    github.verify(
        vector["body"].encode(), {"X-Hub-Signature-256": vector["signature"]}, now=UNTIMED_NOW
    )
