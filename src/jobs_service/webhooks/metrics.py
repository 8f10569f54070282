"""Prometheus counters of webhook ingestion (scraped from the gateway's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["WEBHOOK_EVENTS"]

#: One count per request outcome: accepted, duplicate, rejected, malformed, too_large,
#: unknown_source. Sources are the configured names, so the label set stays small.
WEBHOOK_EVENTS = Counter(
    "jobs_webhook_requests",
    "Webhook requests by source and outcome",
    ["source", "outcome"],
)
