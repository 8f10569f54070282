"""Prometheus counters of webhook ingestion (scraped from the gateway's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["WEBHOOK_EVENTS", "count_webhook"]

#: One count per request outcome: accepted, duplicate, rejected, malformed, too_large,
#: unknown_source, disconnected (the sender went away before its body was read).
#: Sources are the configured names, so the label set stays small.
WEBHOOK_EVENTS = Counter(
    "jobs_webhook_requests",
    "Webhook requests by source and outcome",
    ["source", "outcome"],
)

_children: dict[tuple[str, str], Counter] = {}


def count_webhook(source: str, outcome: str) -> None:
    """Count one outcome. The labelled child is looked up once per pair (``labels()``
    takes a lock and builds a key on every call, and this runs for every event)."""
    child = _children.get((source, outcome))
    if child is None:
        child = _children[source, outcome] = WEBHOOK_EVENTS.labels(source, outcome)
    child.inc()
