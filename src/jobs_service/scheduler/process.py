"""*The* scheduler object: ``taskiq scheduler jobs_service.scheduler:scheduler``."""

from __future__ import annotations

from jobs_service.broker import broker
from jobs_service.scheduler.source import JobsScheduler

__all__ = ["scheduler"]

scheduler = JobsScheduler(broker)
