"""Schemathesis fuzzes every operation of the OpenAPI document against the real gateway.

Two callers: one holding a valid all-scopes key, and one with no key or a wrong key.
Either way no answer is a 5xx and every answer matches the document (status code,
content type, body schema); without a valid key every ``/v1`` answer is a 401
problem. Each operation gets Schemathesis's explicit-example and coverage cases plus
``JOBS_TEST_FUZZ_EXAMPLES`` fuzzed ones (default 25), from a fixed seed with
deterministic generation. A longer local run lifts the per-test timeout::

    JOBS_TEST_FUZZ_EXAMPLES=500 .venv/bin/pytest --timeout=0 \
        tests/integration/gateway/test_openapi_fuzz.py
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.support.fuzzing import (
    FUZZ_KEY,
    SIGNED_SOURCE,
    WRONG_KEY,
    bearer,
    fuzz_app,
    gateway_schema,
    serve,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from schemathesis.python.asgi import ASGIClient

PROBLEM_JSON = "application/problem+json"
#: What every answer must satisfy, whoever asks.
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

schema = gateway_schema()
#: One gateway serves every example of an operation, as a deployed one would.
ONE_GATEWAY_PER_OPERATION = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def gateway(sqlite_url: str) -> Iterator[ASGIClient]:
    """A fresh gateway on a migrated SQLite file, with one record of each kind."""
    with serve(fuzz_app(sqlite_url)) as client:
        yield client


@schema.parametrize()
@ONE_GATEWAY_PER_OPERATION
def test_fuzz_with_a_valid_key(case: schemathesis.Case[Any], gateway: ASGIClient) -> None:
    """With an all-scopes key: no 5xx, answers conform, invalid input is refused."""
    case.call_and_validate(
        session=gateway,
        headers=bearer(FUZZ_KEY),
        checks=[
            *CONFORMANCE,
            negative_data_rejection,
            positive_data_acceptance,
            unsupported_method,
        ],
    )


@schema.parametrize()
@ONE_GATEWAY_PER_OPERATION
def test_fuzz_without_a_valid_key(case: schemathesis.Case[Any], gateway: ASGIClient) -> None:
    """No key, then a wrong key: every /v1 answer is a 401 problem, nothing is a 5xx."""
    for headers in ({}, bearer(WRONG_KEY)):
        response = case.call_and_validate(session=gateway, headers=headers, checks=CONFORMANCE)
        if case.method != case.operation.method.upper():
            continue  # a probe with a method the path does not serve: 405 is right
        sent = f"{case.as_curl_command(headers)}\n-> {response.status_code} {response.text}"
        if case.path.startswith("/v1/"):
            assert response.status_code == 401, sent
            assert response.headers["content-type"] == [PROBLEM_JSON], sent
        elif case.path_parameters == {"source": SIGNED_SOURCE}:
            # No fuzzed request to /webhooks/signed carries a valid signature.
            assert response.status_code == 401, sent
