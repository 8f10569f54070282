"""The HTTP gateway: validates, authenticates, persists, enqueues, answers.

It never runs job logic itself (except inside ``jobsctl run``, where the in-memory
broker executes tasks in the same process) and never imports msgraph.
"""

from __future__ import annotations

from jobs_service.gateway.app import create_app

__all__ = ["create_app"]
