"""Splitting a verified request into events: Graph notifications get ids that are
stable across retries and reveal nothing of the clientState."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from jobs_service.core.settings import WebhookSource
from jobs_service.webhooks.events import split_events
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
