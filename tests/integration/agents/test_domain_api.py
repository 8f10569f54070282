"""DomainApi against a real fake domain and token endpoint on 127.0.0.1."""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from jobs_service.agents.domain_api import DomainApi
from jobs_service.core.errors import ConfigurationError, PermanentError, RetryLater
from jobs_service.core.settings import DomainApiSettings
from jobs_service.infrastructure.http import OAuth2Token
from tests.support.fakes.domain import FakeDomainApi
from tests.support.fakes.server import serve
from tests.support.fakes.tokens import FakeTokenEndpoint

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio


class World:
    def __init__(self, tokens: FakeTokenEndpoint, domain: FakeDomainApi, token_url: str, base: str):
        self.tokens = tokens
        self.domain = domain
        self.token_url = token_url
        self.base_url = base

    def settings(self, **overrides: object) -> DomainApiSettings:
        values: dict[str, object] = {
            "base_url": self.base_url,
            "token_url": self.token_url,
            "client_id": self.tokens.client_id,
            "client_secret": self.tokens.client_secret,
            "scope": "jobs",
        }
        return DomainApiSettings.model_validate(values | overrides)


@pytest.fixture
def world() -> Iterator[World]:
    tokens = FakeTokenEndpoint()
    domain = FakeDomainApi(tokens=tokens)
    with serve(tokens.app) as token_base, serve(domain.app) as domain_base:
        yield World(tokens, domain, f"{token_base}/token", domain_base)


async def test_an_action_carries_the_run_id_token_and_payload(world: World) -> None:
    agent = DomainApi(world.settings())
    try:
        answer = await agent.call("reports/kpi", {"items": 3}, run_id="run-1")
    finally:
        await agent.aclose()
    assert answer.summary == {"errors": 0, "processed": 3}
    assert answer.content == "**reports/kpi** done for run `run-1`"
    [call] = world.domain.calls_of("reports/kpi")
    assert call.idempotency_key == "run-1"
    assert call.body == {"run_id": "run-1", "payload": {"items": 3}}
    assert world.tokens.requests == [
        {"client_id": "jobs-client", "grant_type": "client_credentials", "scope": "jobs"}
    ]


async def test_fifty_concurrent_calls_fetch_one_token(world: World) -> None:
    world.tokens.delay_s = 0.2  # every caller arrives while the first request is in flight
    agent = DomainApi(world.settings())
    try:
        async with anyio.create_task_group() as group:
            for index in range(50):
                group.start_soon(partial(agent.call, "accounts/sync", run_id=f"run-{index}"))
    finally:
        await agent.aclose()
    assert world.tokens.grants("client_credentials") == 1
    assert len(world.domain.calls_of("accounts/sync")) == 50


async def test_an_expired_token_is_refreshed(world: World) -> None:
    clock = [1000.0]
    async with httpx.AsyncClient() as http:
        token = OAuth2Token(
            http,
            token_url=world.token_url,
            client_id="jobs-client",
            client_secret="jobs-secret",
            scope=None,
            setting="domain_api",
            clock=lambda: clock[0],
        )
        first = await token.token()
        assert await token.token() == first  # cached
        clock[0] += 3600 - 59  # inside the last minute of its hour: refresh early
        second = await token.token()
    assert second != first
    assert world.tokens.grants("client_credentials") == 2


async def test_a_revoked_token_is_renewed_once_on_401(world: World) -> None:
    agent = DomainApi(world.settings())
    try:
        await agent.call("accounts/sync", run_id="a")
        world.tokens.revoke_all()
        answer = await agent.call("accounts/sync", run_id="b")
    finally:
        await agent.aclose()
    assert answer.summary["errors"] == 0
    assert world.tokens.grants("client_credentials") == 2


async def test_a_503_is_retried_in_call_with_the_same_idempotency_key(world: World) -> None:
    world.domain.fail_next("accounts/sync", 503, count=2, retry_after="0")
    agent = DomainApi(world.settings(retries=2))
    try:
        answer = await agent.call("accounts/sync", run_id="run-7")
    finally:
        await agent.aclose()
    calls = world.domain.calls_of("accounts/sync")
    assert [call.idempotency_key for call in calls] == ["run-7"] * 3
    assert answer.summary == {"errors": 0, "processed": 1}


async def test_a_long_retry_after_is_left_to_the_run_retry(world: World) -> None:
    world.domain.fail_next("accounts/sync", 429, retry_after="120")
    agent = DomainApi(world.settings())
    started = time.monotonic()
    try:
        with pytest.raises(RetryLater) as caught:
            await agent.call("accounts/sync", run_id="run-8")
    finally:
        await agent.aclose()
    assert caught.value.retry_after == 120
    assert "429" in str(caught.value)
    assert time.monotonic() - started < 5  # not slept inside the call
    assert len(world.domain.calls_of("accounts/sync")) == 1


async def test_still_processing_waits_at_least_a_calls_timeout(world: World) -> None:
    """A 409 means the action is still running: retried within seconds, it used up a
    run's retries while the domain was still working, and the run ended dead. Now it is
    the run's retry, no sooner than ``timeout_s``, or the domain's longer Retry-After."""
    world.domain.fail_next("agents/report", 409, count=1)
    world.domain.fail_next("agents/report", 409, count=1, retry_after="300")
    agent = DomainApi(world.settings(timeout_s=45, retries=2))
    started = time.monotonic()
    waits = []
    try:
        for _ in range(2):
            with pytest.raises(RetryLater, match="still processing") as caught:
                await agent.call("agents/report", run_id="run-9")
            waits.append(caught.value.retry_after)
    finally:
        await agent.aclose()
    assert waits == [45, 300]
    assert time.monotonic() - started < 5
    assert len(world.domain.calls_of("agents/report")) == 2


async def test_a_4xx_is_permanent_and_not_retried(world: World) -> None:
    agent = DomainApi(world.settings())
    try:
        with pytest.raises(PermanentError, match="404"):
            await agent.call("missing/action", run_id="run-9")
    finally:
        await agent.aclose()
    assert len(world.domain.calls_of("missing/action")) == 1


async def test_a_server_that_is_down_is_retryable() -> None:
    agent = DomainApi(DomainApiSettings(base_url="http://127.0.0.1:9", retries=0))
    try:
        with pytest.raises(RetryLater, match="unreachable"):
            await agent.call("accounts/sync", run_id="x")
    finally:
        await agent.aclose()


async def test_wrong_credentials_name_the_settings(world: World) -> None:
    agent = DomainApi(world.settings(client_secret="wrong"))
    try:
        with pytest.raises(ConfigurationError) as caught:
            await agent.call("accounts/sync", run_id="x")
    finally:
        await agent.aclose()
    message = str(caught.value)
    assert "domain_api.client_id" in message
    assert "domain_api.client_secret" in message
    assert "invalid_client" in message
    assert "wrong" not in message
    assert world.domain.calls == []


async def test_missing_settings_are_named_when_used() -> None:
    unset = DomainApi(DomainApiSettings())
    with pytest.raises(ConfigurationError, match=r"domain_api\.base_url is not set"):
        await unset.call("accounts/sync", run_id="x")
    half = DomainApi(DomainApiSettings(base_url="http://127.0.0.1:9", token_url="http://x/t"))
    with pytest.raises(
        ConfigurationError, match=r"domain_api\.client_id and domain_api\.client_secret"
    ):
        await half.call("accounts/sync", run_id="x")
    await unset.aclose()
    await half.aclose()


async def test_an_answer_that_breaks_the_contract_is_permanent(world: World) -> None:
    world.domain.answers["reports/bad"] = {"summary": {"processed": "many"}}
    agent = DomainApi(world.settings())
    try:
        with pytest.raises(PermanentError, match="'processed' must be an int"):
            await agent.call("reports/bad", run_id="x")
    finally:
        await agent.aclose()


async def test_an_invalid_action_name_is_refused_before_any_request(world: World) -> None:
    agent = DomainApi(world.settings())
    try:
        with pytest.raises(PermanentError, match="invalid domain action"):
            await agent.call("../admin", run_id="x")
    finally:
        await agent.aclose()
    assert world.tokens.requests == []
