"""The gateway's answer when the broker takes a send and never answers: 503
``broker-unconfirmed`` naming the run that may be queued, never "nothing was queued"."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from jobs_service.broker import broker
from jobs_service.client import EnqueueUnconfirmedError, JobsClient
from jobs_service.gateway import create_app
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from jobs_service.client import RunRequest
    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

BODY = {"kwargs": {"items": ["a"]}}


async def _unanswered(
    client: JobsClient, requests: Sequence[RunRequest], wire: object = None
) -> None:
    """A send the broker took and did not answer."""
    del client, wire
    raise EnqueueUnconfirmedError(
        "the broker did not confirm the run", run_ids=[r.run_id for r in requests]
    )


async def test_a_keyless_submit_left_unconfirmed_names_its_run_and_invites_no_resubmit(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """503 broker-unconfirmed with the run id; no Retry-After, as a resubmit without a
    key would be a second run."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        monkeypatch.setattr(JobsClient, "send", _unanswered)
        response = await client.post("/v1/tasks/count_items", json=BODY)
    body = response.json()
    assert response.status_code == 503
    assert body["type"] == "urn:jobs-service:problem:broker-unconfirmed"
    assert body["run_ids"] == [body["run_id"]]
    assert body["recorded"] is False
    assert "retry-after" not in response.headers


async def test_a_keyed_submit_left_unconfirmed_is_replayed_by_its_repeat(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """503 broker-unconfirmed with the run id and Retry-After: the claim is kept, so the
    repeat answers 202 with that same run (sending it again), not a second one."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    headers = {"Idempotency-Key": "report-7"}
    async with serve_app(app) as client:
        with monkeypatch.context() as patch:
            patch.setattr(JobsClient, "send", _unanswered)
            unconfirmed = await client.post("/v1/tasks/count_items", json=BODY, headers=headers)
            marked = (await client.get(f"/v1/runs/{unconfirmed.json()['run_id']}")).json()
        repeat = await client.post("/v1/tasks/count_items", json=BODY, headers=headers)
        runs = (await client.get("/v1/runs?task=count_items")).json()["items"]
    body = unconfirmed.json()
    assert marked["status"] == "queued"
    assert marked["send_unconfirmed_at"] is not None
    assert runs[0]["send_unconfirmed_at"] is None
    assert unconfirmed.status_code == 503
    assert body["type"] == "urn:jobs-service:problem:broker-unconfirmed"
    assert body["recorded"] is True
    assert unconfirmed.headers["retry-after"] == "5"
    assert repeat.status_code == 202
    assert repeat.headers["idempotent-replayed"] == "true"
    assert repeat.json()["run_id"] == body["run_id"]
    assert [run["run_id"] for run in runs] == [body["run_id"]]


async def test_a_batch_whose_second_chunk_is_left_unconfirmed_says_which_runs_are_which(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first chunk (100 runs) is queued, the next 50 may be: queued_run_ids and
    run_ids say which; no Retry-After, as resending the batch would queue runs twice."""
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    real_send = JobsClient.send
    sends = 0

    async def second_unanswered(
        client: JobsClient, requests: Sequence[RunRequest], wire: object = None
    ) -> None:
        nonlocal sends
        sends += 1
        if sends == 1:
            await real_send(client, requests, wire)  # type: ignore[arg-type]
            return
        await _unanswered(client, requests, wire)

    items = [{"kwargs": {"items": [str(n)]}} for n in range(150)]
    async with serve_app(app) as client:
        monkeypatch.setattr(JobsClient, "send", second_unanswered)
        response = await client.post("/v1/tasks/count_items/batch", json={"items": items})
    body = response.json()
    assert response.status_code == 503
    assert body["type"] == "urn:jobs-service:problem:broker-unconfirmed"
    assert len(body["queued_run_ids"]) == 100
    assert len(body["run_ids"]) == 50
    assert not set(body["queued_run_ids"]) & set(body["run_ids"])
    assert "retry-after" not in response.headers
