"""Ports: the small interfaces tasks depend on. Agents implement them; tests use the
recording fakes in :mod:`jobs_service.testing`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "CheckResult",
    "HealthProbe",
    "Resends",
    "RunHistory",
    "UnconfirmedSends",
    "WebhookRelay",
]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one dependency check."""

    name: str
    ok: bool
    latency_ms: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Resends:
    """What sending unconfirmed runs again did: the runs looked at, those sent (each
    added once at most), those a worker had started meanwhile, and those that cannot
    be sent (their task is not registered here)."""

    checked: int
    sent: int
    started: int
    unsendable: int


class RunHistory(Protocol):
    """The service's own run history, as maintenance jobs need it."""

    async def delete_finished_before(self, cutoff: datetime) -> int:
        """Delete finished runs older than ``cutoff``; return how many."""
        ...

    async def delete_finished_events_before(self, cutoff: datetime) -> int:
        """Delete webhook events whose runs ended before ``cutoff``; return how many."""
        ...

    async def delete_audit_entries_before(self, cutoff: datetime) -> int:
        """Delete audit entries recorded before ``cutoff``; return how many."""
        ...

    async def count_stuck(self, older_than: datetime) -> int:
        """Count runs queued or running since before ``older_than``."""
        ...


class HealthProbe(Protocol):
    """Checks of the service's own dependencies."""

    async def check_all(self) -> list[CheckResult]:
        """Check every dependency (database, broker) and report each."""
        ...


class WebhookRelay(Protocol):
    """The webhook inbox's relay: events stored while the broker was down."""

    async def relay(self) -> int:
        """Enqueue accepted events whose run never reached the broker; return how many."""
        ...


class UnconfirmedSends(Protocol):
    """Queued runs whose send the broker never confirmed (their message may be queued)."""

    async def resend_unconfirmed(self, before: datetime) -> Resends:
        """Send again the runs marked unconfirmed before ``before``, each at most once
        per queueing, and unmark those sent or started."""
        ...
