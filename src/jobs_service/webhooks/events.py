"""From a verified request to the events it carries: id, type and payload of each.

The event id is what makes retries of the same delivery a duplicate, so every event
needs one. Where a sender provides none (a generic HMAC sender without an id field), the
id is the SHA-256 of the raw body, the bytes the sender signed: a retry sends the same
bytes, and any difference, down to the last digit of a number, makes another event.
Bodies and located ids are read exactly (:mod:`~jobs_service.webhooks.exact_json`):
an integer beyond 64 bits keeps every digit, and an id with a fraction or an exponent
is the number's text as sent (as a double, ids that differ past its 17 significant
digits would be one event, the second answered ``duplicate`` and dropped).

A Graph notification, one of several in a body, has as id the hash of its canonical
JSON *as stored*, its ``clientState`` redacted. Hashed with it, the id would let anyone
who can read stored ids test guesses of the shared secret offline; without it, the id
still covers every field Graph sends (subscription, change type, resource, resource
data with its etag, tenant), so two distinct changes keep two ids while a retry of one
is a duplicate. A subset of those fields (subscription, change type, resource id) would
merge two updates of the same item, the second lost as a "duplicate". It also keeps one
id across a ``clientState`` rotation, and anyone can recompute it from the stored body.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from jobs_service.infrastructure.models import WebhookEvent, column_length
from jobs_service.webhooks.exact_json import dumps_exact, loads_exact

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from jobs_service.core.settings import WebhookSource
    from jobs_service.webhooks.verification import Verified

__all__ = [
    "DEFAULT_LOCATORS",
    "MAX_EVENT_ID",
    "MAX_EVENT_TYPE",
    "IncomingEvent",
    "MalformedEventError",
    "split_events",
]


#: The lengths of ``webhook_events.external_id`` and ``event_type``: a value the column
#: cannot hold would fail the whole batch it is written in, on PostgreSQL.
MAX_EVENT_ID = column_length(WebhookEvent, "external_id")
MAX_EVENT_TYPE = column_length(WebhookEvent, "event_type")

#: Where each scheme's senders put the event id and type, unless the source says.
DEFAULT_LOCATORS: dict[str, tuple[str | None, str | None]] = {
    "standard": ("header:webhook-id", "json:/type"),
    # The body is all GitHub signs: its hash, not X-GitHub-Delivery, is the event id.
    "github": (None, "header:X-GitHub-Event"),
    "stripe": ("json:/id", "json:/type"),
    "hmac-sha256": ("json:/id", "json:/type"),
    "teams": ("json:/id", "json:/type"),
    "graph": (None, "json:/changeType"),
    "none": ("json:/id", "json:/type"),
}


class MalformedEventError(ValueError):
    """The body is not the JSON the scheme requires."""


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """One event of a request, ready to be stored."""

    external_id: str
    event_type: str | None
    body: str


def _pointer(document: Any, pointer: str) -> Any:
    """RFC 6901 JSON pointer lookup; None when the path does not exist."""
    if pointer in ("", "/"):
        return document
    current = document
    for raw in pointer.lstrip("/").split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def _located(locator: str | None, headers: Mapping[str, str], document: Any) -> Any:
    if locator is None:
        return None
    kind, _, where = locator.partition(":")
    return headers.get(where.lower()) if kind == "header" else _pointer(document, where)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value).strip() or None


def _locate(locator: str | None, headers: Mapping[str, str], document: Any) -> str | None:
    return _text(_located(locator, headers, document))


def _locate_id(
    locator: str | None, headers: Mapping[str, str], document: Any, exact: Callable[[], Any]
) -> str | None:
    """The event id at ``locator``; a number with a fraction or an exponent is its text
    as sent, located again in ``exact()`` (the document read with such numbers as their
    text), which is parsed only then."""
    value = _located(locator, headers, document)
    if isinstance(value, float):
        value = _located(locator, headers, exact())
    return _text(value)


def _exact_document(body: bytes) -> Any:
    """The body with its numbers that have a fraction or an exponent as their text."""
    try:
        return loads_exact(body, floats_as_text=True)
    except orjson.JSONDecodeError as exc:  # nested too deeply to read so
        raise MalformedEventError(f"body is not valid JSON ({exc})") from None


def _exact_notification(body: bytes, index: int) -> Any:
    return _exact_document(body)["value"][index]


def _bounded_id(value: str) -> str:
    """An event id that fits its column. A longer one is replaced by its digest, not cut:
    two ids alike in their first 255 characters must stay two events (a cut would
    answer the second ``duplicate`` and drop it), and a repeat of one must stay a
    duplicate."""
    if len(value) <= MAX_EVENT_ID:
        return value
    # Its own prefix: a content digest (``sha256:``, events without an id) never meets it.
    return "id-sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _bounded_type(value: str | None) -> str | None:
    """An event type cut to its column: types only pick a route (routes name short ones)."""
    return value[:MAX_EVENT_TYPE] if value else value


def _content_id(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def _incoming(external_id: str, event_type: str | None, body: str) -> IncomingEvent:
    """The event as it will be stored: id and type fitted to their columns. A NUL
    character (``\\u0000`` in JSON) is refused: PostgreSQL text cannot hold one, and the
    refusal would fail the whole batch the event is written in."""
    for what, value in (("id", external_id), ("type", event_type)):
        if value is not None and "\x00" in value:
            msg = f"the event {what} contains a NUL character (\\u0000), which cannot be stored"
            raise MalformedEventError(msg)
    return IncomingEvent(_bounded_id(external_id), _bounded_type(event_type), body)


def split_events(
    source: WebhookSource, body: bytes, headers: Mapping[str, str], verified: Verified
) -> list[IncomingEvent]:
    """Parse the body and return its events (Graph batches give one per notification).

    ``headers`` must have lowercase names. Raises :class:`MalformedEventError`.
    """
    try:
        document = loads_exact(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedEventError(f"body is not valid JSON ({exc})") from None
    default_id, default_type = DEFAULT_LOCATORS[source.scheme]
    id_locator = source.event_id or default_id
    type_locator = source.event_type or default_type
    if source.scheme == "graph":
        items = document.get("value") if isinstance(document, dict) else None
        if not isinstance(items, list) or not items:
            raise MalformedEventError("a Graph notification body needs a non-empty 'value'")
        events = []
        for index, item in enumerate(items):
            stored = _without_client_state(item)
            exact = partial(_exact_notification, body, index)
            external_id = _locate_id(id_locator, headers, item, exact) or _content_id(
                dumps_exact(stored, sort_keys=True)
            )
            event_type = _locate(type_locator, headers, item)
            events.append(_incoming(external_id, event_type, dumps_exact(stored).decode()))
        return events
    external_id = (
        verified.event_id
        or _locate_id(id_locator, headers, document, partial(_exact_document, body))
        or _content_id(body)
    )
    event_type = verified.event_type or _locate(type_locator, headers, document)
    return [_incoming(external_id, event_type, body.decode("utf-8", "replace"))]


def _without_client_state(item: Any) -> Any:
    """A notification as stored: its ``clientState`` is the shared secret, so it is
    redacted (it was verified already) like signature headers are."""
    if isinstance(item, dict) and "clientState" in item:
        return {**item, "clientState": "[redacted]"}
    return item
