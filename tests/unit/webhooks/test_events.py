"""Splitting a verified request into events: Graph notifications get ids that are
stable across retries and reveal nothing of the clientState."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
import pytest

from jobs_service.core.settings import WebhookSource
from jobs_service.webhooks.events import MalformedEventError, split_events
from jobs_service.webhooks.verification import Verified

GRAPH = WebhookSource(scheme="graph", secrets=["cs-old-secret", "cs-new-secret"])
NOTHING = Verified(event_id=None, event_type=None, timestamp=None)


def _notification(client_state: str, **changes: Any) -> dict[str, Any]:
    return {
        "subscriptionId": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
        "subscriptionExpirationDateTime": "2026-01-03T11:00:00.0000000Z",
        "changeType": "updated",
        "resource": "Users/ops@example.com/Messages/AAMkAGI1AAA=",
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Message",
            "@odata.id": "Users/ops@example.com/Messages/AAMkAGI1AAA=",
            "@odata.etag": 'W/"CQAAABYAAAB1"',
            "id": "AAMkAGI1AAA=",
        },
        "clientState": client_state,
        "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
        **changes,
    }


def _ids(*notifications: dict[str, Any]) -> list[str]:
    body = orjson.dumps({"value": list(notifications)})
    return [event.external_id for event in split_events(GRAPH, body, {}, NOTHING)]


def _sha256(document: Any) -> str:
    canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def test_a_graph_event_id_does_not_depend_on_the_client_state() -> None:
    """The same notification under either of two clientStates (a rotation) is one event,
    and its id is the hash of the redacted notification, never of the secret."""
    [old] = _ids(_notification("cs-old-secret"))
    [new] = _ids(_notification("cs-new-secret"))
    assert old == new == _sha256(_notification("[redacted]"))
    assert old != _sha256(_notification("cs-old-secret"))


def test_a_graph_event_id_is_the_hash_of_the_stored_notification() -> None:
    """What the inbox stores is enough to recompute the id."""
    body = orjson.dumps({"value": [_notification("cs-old-secret")]})
    [event] = split_events(GRAPH, body, {}, NOTHING)
    assert "cs-old-secret" not in event.body
    assert event.external_id == _sha256(orjson.loads(event.body))


def test_distinct_graph_changes_keep_distinct_ids() -> None:
    """A second update of the same item (a new etag) is a new event, not a duplicate;
    the same notification sent again is the same one."""
    first = _notification("cs-old-secret")
    second = _notification(
        "cs-old-secret", resourceData={**first["resourceData"], "@odata.etag": 'W/"CQ2"'}
    )
    assert len(set(_ids(first, second))) == 2
    assert _ids(first) == _ids(first)


HMAC = WebhookSource(scheme="hmac-sha256", secrets=["s"], signature_header="X-Signature")


def test_bodies_differing_only_in_a_big_integer_are_two_events() -> None:
    """Without an id field the id is the hash of the body. It was the hash of the body
    as orjson read it, an integer beyond 64 bits as a float, so two transfers differing
    in their last digits had one id and the second was dropped as a duplicate."""
    first = b'{"type":"transfer","amount_wei":100000000000000000001}'
    second = b'{"type":"transfer","amount_wei":100000000000000000002}'
    [one] = split_events(HMAC, first, {}, NOTHING)
    [other] = split_events(HMAC, second, {}, NOTHING)
    assert one.external_id == "sha256:" + hashlib.sha256(first).hexdigest()
    assert other.external_id == "sha256:" + hashlib.sha256(second).hexdigest()
    assert one.body == first.decode()


@pytest.mark.parametrize("number", [b'"n": 1234567890123456789012', b'"id": 1.5'])
def test_a_body_too_deep_for_exact_numbers_is_malformed_not_a_crash(number: bytes) -> None:
    """orjson reads 1,000 levels; the standard library, which keeps long integers
    exact and reads an id with a fraction as its text, cannot: such a body is refused
    (400), as a deeper one always was."""
    deep = b'{"type": "t", ' + number + b', "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    with pytest.raises(MalformedEventError, match="nested too deeply"):
        split_events(HMAC, deep, {}, NOTHING)


def test_an_event_id_beyond_64_bits_keeps_every_digit() -> None:
    """A numeric id located in the body is the number as sent, not a float's rounding
    (which made two ids alike in their first 17 digits one event)."""
    ids = [
        split_events(HMAC, b'{"id": %d, "type": "t"}' % number, {}, NOTHING)[0].external_id
        for number in (123456789012345678901234, 123456789012345678901235)
    ]
    assert ids == ["123456789012345678901234", "123456789012345678901235"]


@pytest.mark.parametrize(
    "numbers",
    [
        ("1234567890123456789.5", "1234567890123456789.7"),  # alike in 17 digits
        ("0.1", "0.10000000000000000001"),  # the same double
        ("1e2", "100.0"),  # spelt apart, equal as doubles
        ("-2.5E-3", "1.5"),
    ],
)
def test_an_event_id_with_a_fraction_or_exponent_is_its_text_as_sent(
    numbers: tuple[str, str],
) -> None:
    """A number read as a double keeps 17 significant digits: two ids that differ past
    them were one id, the second event answered ``duplicate`` and dropped. Such an id
    is the number's text in the body, every digit kept; a repeat is the same id."""
    ids = [
        split_events(HMAC, b'{"id": %s, "type": "t"}' % number.encode(), {}, NOTHING)[0]
        for number in (*numbers, numbers[0])
    ]
    assert [event.external_id for event in ids] == [*numbers, numbers[0]]
    assert ids[0].body == f'{{"id": {numbers[0]}, "type": "t"}}'


def test_a_graph_notification_id_with_a_fraction_is_its_text_as_sent() -> None:
    """The same for an id located in each notification of a Graph batch: each is the
    text of its own notification's number."""
    source = WebhookSource(scheme="graph", secrets=["cs-old-secret"], event_id="json:/sequence")
    first = orjson.dumps(_notification("cs-old-secret", sequence=1.5))
    second = orjson.dumps(_notification("cs-old-secret", sequence=2.5))
    body = (
        b'{"value":['
        + first.replace(b'"sequence":1.5', b'"sequence":1234567890123456789.5')
        + b","
        + second.replace(b'"sequence":2.5', b'"sequence":1234567890123456789.7')
        + b"]}"
    )
    events = split_events(source, body, {}, NOTHING)
    assert [event.external_id for event in events] == [
        "1234567890123456789.5",
        "1234567890123456789.7",
    ]


def test_a_graph_notification_keeps_its_big_numbers() -> None:
    """Notifications are stored as written again from the parsed body, so an integer
    beyond 64 bits is kept exact in the stored body and in the id."""
    body = orjson.dumps({"value": [_notification("cs-old-secret")]}).replace(
        b'"tenantId"', b'"sequence":18446744073709551616001,"tenantId"'
    )
    [event] = split_events(GRAPH, body, {}, NOTHING)
    stored = json.loads(event.body)
    canonical = json.dumps(stored, sort_keys=True, separators=(",", ":")).encode()
    assert stored["sequence"] == 18446744073709551616001
    assert event.external_id == "sha256:" + hashlib.sha256(canonical).hexdigest()


@pytest.mark.parametrize(
    "body",
    [b'{"id": "evt\\u0000-1", "type": "paid"}', b'{"id": "evt-1", "type": "pa\\u0000id"}'],
)
def test_a_nul_in_an_event_id_or_type_is_malformed(body: bytes) -> None:
    """PostgreSQL text cannot hold a NUL: stored, it failed the batch of every request
    written with it. It is refused as malformed before anything is written."""
    with pytest.raises(MalformedEventError, match="NUL"):
        split_events(HMAC, body, {}, NOTHING)
