"""Schemathesis against the real gateway: keys, settings, the schema and the fuzz budget.

The OpenAPI document is the app's own (``app.openapi()``), loaded when the test module is
collected so Schemathesis can make one test per operation. Each test then starts a fresh
gateway through Schemathesis's ASGI client, which runs the app's lifespan on its own
event-loop thread and serves every request of the test on that same loop.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import time
from typing import TYPE_CHECKING, Any, cast

import schemathesis
from schemathesis.python import asgi

from jobs_service.broker import broker
from jobs_service.core.settings import Settings
from jobs_service.gateway import create_app

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fastapi import FastAPI
    from schemathesis.schemas import BaseSchema

__all__ = [
    "FUZZ_KEY",
    "OPEN_SOURCE",
    "SIGNED_SOURCE",
    "WRONG_KEY",
    "bearer",
    "examples_per_operation",
    "fuzz_app",
    "gateway_schema",
    "serve",
]

FUZZ_KEY = "fuzz-key-0123456789abcdef"
WRONG_KEY = "fuzz-key-0123456789abcdeX"
#: A ``scheme = "none"`` source (refused only in production): fuzzed bodies get through.
OPEN_SOURCE = "open"
#: A signed source: no fuzzed request carries a valid signature, so every answer is 401.
SIGNED_SOURCE = "signed"
_SIGNING_KEY = b"fuzz-signing-key-0123456789abcd"
#: Sample tasks that finish at once, the first two without required arguments: real
#: names for ``{name}`` and a schedule's ``task``.
_TASKS = ("count_awkwardly", "fail_on_purpose", "count_items", "record_webhook")

#: How long the first records' runs may take to finish before the fuzzing starts.
_SETTLE_S = 10.0

#: What Schemathesis expects for valid input by default: success, refusals it cannot
#: foresee (auth, unknown ids, conflicts, rate limits) and the server errors that another
#: check reports.
_ACCEPTED = ["2xx", "3xx", 401, 403, 404, 409, 429, "5xx"]

#: CI budget per operation (fuzzing phase); ``JOBS_TEST_FUZZ_EXAMPLES=1000`` runs longer.
#: (``JOBS_TEST_`` because tests/conftest.py drops every other ``JOBS_*`` variable.)
_DEFAULT_EXAMPLES = 25
#: Fixed so CI and a developer replaying a failure generate the same cases.
_DEFAULT_SEED = 20_260_601


def examples_per_operation() -> int:
    """Examples per operation in the fuzzing phase."""
    return int(os.environ.get("JOBS_TEST_FUZZ_EXAMPLES", _DEFAULT_EXAMPLES))


def bearer(key: str) -> dict[str, str]:
    """The Authorization header carrying ``key``."""
    return {"Authorization": f"Bearer {key}"}


def fuzz_settings(database_url: str) -> Settings:
    """One all-scopes key, one open and one signed webhook source, a short shutdown."""
    overrides: dict[str, Any] = {
        "database_url": database_url,
        "env": "test",
        "api_keys": [
            {
                "name": "fuzz",
                "sha256": hashlib.sha256(FUZZ_KEY.encode()).hexdigest(),
                "scopes": ["read", "operate", "admin"],
            }
        ],
        "webhooks": {
            "sources": {
                OPEN_SOURCE: {"scheme": "none", "default_task": "record_webhook"},
                SIGNED_SOURCE: {
                    "scheme": "standard",
                    "secrets": ["whsec_" + base64.b64encode(_SIGNING_KEY).decode()],
                    "default_task": "record_webhook",
                },
            }
        },
        # A fuzzed run of a slow sample task must not hold the shutdown for long.
        "worker": {"shutdown_timeout_s": 1},
        # One log line per fuzzed request is noise; a failure shows its request.
        "api": {"request_log": False},
    }
    return Settings(**overrides)


def fuzz_app(database_url: str) -> FastAPI:
    """The embedded gateway (in-memory broker, no scheduler loop) under fuzz settings."""
    return create_app(fuzz_settings(database_url), broker=broker, embedded=True, scheduler=False)


def gateway_schema() -> BaseSchema:
    """The gateway's OpenAPI document with a fixed seed and budget. Path parameters are
    often (not always) real names and ids, so the fuzzer gets past the 404s."""
    config = schemathesis.Config.from_dict(
        {
            "seed": int(os.environ.get("JOBS_TEST_FUZZ_SEED", _DEFAULT_SEED)),
            "generation": {
                "mode": "all",
                "max-examples": examples_per_operation(),
                "deterministic": True,
                # Failures are reported, not stored in .hypothesis/ to replay on the next run.
                "database": "none",
            },
            "dictionaries": {
                "sources": {"values": [OPEN_SOURCE, SIGNED_SOURCE]},
                "tasks": {"values": list(_TASKS)},
                "crons": {"values": ["0 3 * * *", "*/5 * * * 1-5"]},
                "zones": {"values": ["UTC", "Asia/Singapore"]},
                # The records serve() creates are the first of their kind: id 1.
                "run_ids": {"values": ["1"]},
                "ids": {"values": [1]},
            },
            "parameters": {
                "path.source": {"dictionary": "sources", "probability": 0.8},
                "path.name": {"dictionary": "tasks", "probability": 0.5},
                "path.run_id": {"dictionary": "run_ids", "probability": 0.5},
                "path.schedule_id": {"dictionary": "ids", "probability": 0.5},
                "path.event_id": {"dictionary": "ids", "probability": 0.5},
                "body.task": {"dictionary": "tasks", "probability": 0.5},
                "body.schedule.cron": {"dictionary": "crons", "probability": 0.5},
                "body.schedule.timezone": {"dictionary": "zones", "probability": 0.5},
            },
            "operations": [
                # Input the document cannot describe, so valid-looking data may be refused:
                # kwargs must match the signature of the task the path or body names, a
                # cron expression must parse, a timezone must exist (422) ...
                {
                    "include-name": [
                        "POST /v1/tasks/{name}",
                        "POST /v1/tasks/{name}/batch",
                        "POST /v1/schedules",
                        "PATCH /v1/schedules/{schedule_id}",
                    ],
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": [*_ACCEPTED, 422]}
                    },
                },
                # ... and a cursor must be one the API returned (400).
                {
                    "include-name": [
                        "GET /v1/runs",
                        "GET /v1/schedules",
                        "GET /v1/webhooks/events",
                        "GET /v1/audit",
                    ],
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": [*_ACCEPTED, 400]}
                    },
                },
            ],
        }
    )
    document = create_app(fuzz_settings("sqlite+aiosqlite://")).openapi()
    return schemathesis.openapi.from_dict(document, config=config)


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[asgi.ASGIClient]:
    """Start the app's lifespan, create one run, schedule and webhook event (id 1 each),
    yield a client for Schemathesis to send through, then shut the app down."""
    try:
        # FastAPI types the ASGI scope as a MutableMapping, Schemathesis as a dict.
        with asgi.get_client(cast("asgi.ASGIApp", app)) as client:
            _create_records(client)
            yield client
    finally:
        asgi.shutdown_lifespans()


def _create_records(client: asgi.ASGIClient) -> None:
    """One of each record, their runs finished, so every example sees the same state."""
    headers = bearer(FUZZ_KEY)
    answers = {
        "run": client.post(
            "/v1/tasks/count_items", json={"kwargs": {"items": ["a"]}}, headers=headers
        ),
        "schedule": client.post(
            "/v1/schedules",
            json={
                "name": "fuzz-nightly",
                "task": "count_items",
                "kwargs": {"items": []},
                "schedule": {"type": "cron", "cron": "0 3 * * *", "timezone": "UTC"},
            },
            headers=headers,
        ),
        "event": client.post(f"/webhooks/{OPEN_SOURCE}", json={"id": "evt-1", "type": "ping"}),
    }
    for name, response in answers.items():
        assert response.status_code in (201, 202), f"{name}: {response.text}"
    deadline = time.monotonic() + _SETTLE_S
    while _unfinished_runs(client, headers):
        assert time.monotonic() < deadline, f"runs still unfinished after {_SETTLE_S} s"
        time.sleep(0.05)


def _unfinished_runs(client: asgi.ASGIClient, headers: dict[str, str]) -> int:
    pending = 0
    for status in ("queued", "running"):
        response = client.get("/v1/runs", params={"status": status}, headers=headers)
        response.raise_for_status()
        pending += len(response.json()["items"])
    return pending
