"""Prometheus counter of result deliveries, by channel and outcome.

Counted where :class:`~jobs_service.agents.delivery.ResultDelivery` learns each
destination's outcome (the ``deliveries`` table keeps the details), in the process
that delivers: served on the worker's metrics port, and on the gateway's ``/metrics``
in the embedded mode.
"""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["DELIVERIES", "count_delivery"]

#: One count per destination and attempt. Outcomes: ``sent``; ``already_sent`` (an
#: earlier attempt of the run sent it); ``in_progress`` (another attempt is sending it:
#: this one retries later); ``failed`` (the provider or the configuration refused it);
#: ``interrupted`` (the attempt was cancelled or timed out mid-send). Channels are
#: ``teams``, ``email`` and ``calendar``, so the label set stays small.
DELIVERIES = Counter(
    "jobs_deliveries", "Result deliveries by channel and outcome", ["channel", "outcome"]
)

_children: dict[tuple[str, str], Counter] = {}


def count_delivery(channel: str, outcome: str) -> None:
    """Count one destination's outcome (the labelled child is looked up once per pair)."""
    child = _children.get((channel, outcome))
    if child is None:
        child = _children[channel, outcome] = DELIVERIES.labels(channel, outcome)
    child.inc()
