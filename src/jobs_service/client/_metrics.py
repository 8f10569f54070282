"""Prometheus counter of sends the broker never confirmed, by task.

A send that timed out or lost its connection after its command was written may or may
not have queued its runs (see ``EnqueueUnconfirmedError``). Each is followed up — a keyed
run or a retry stays marked ``send_unconfirmed_at`` until a repeat or
``resend_unconfirmed_runs`` sends it again — but a count that keeps rising says Redis is
stalling under the producers, which the log alone makes easy to miss. Counted in the
process that sent: the gateway's ``/metrics``, the scheduler's endpoint, or the worker's
for runs its tasks queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["SENDS_UNCONFIRMED", "count_unconfirmed"]

#: One count per run whose send was not confirmed. Tasks are registered names, so the
#: label set stays small.
SENDS_UNCONFIRMED = Counter(
    "jobs_sends_unconfirmed",
    "Runs whose send the broker did not confirm (they may or may not be queued)",
    ["task"],
)


def count_unconfirmed(tasks: Iterable[str]) -> None:
    """Count one run per name in ``tasks``."""
    for task in tasks:
        SENDS_UNCONFIRMED.labels(task).inc()
