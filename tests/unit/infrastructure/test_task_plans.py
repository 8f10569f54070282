"""A worker runs the function registered under a task's name now, not one it cached."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from taskiq import InMemoryBroker

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio


async def test_a_task_registered_again_runs_its_new_function(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """count_items runs once (its plan is cached), then a stand-in takes its name: the
    next run calls the stand-in, and once the original is back, the original again."""
    task = broker.find_task("count_items")
    assert task is not None
    calls: list[dict[str, Any]] = []

    async def stand_in(**kwargs: Any) -> dict[str, int]:
        calls.append(kwargs)
        return {"stood_in": 1, "errors": 0}

    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    assert isinstance(broker, InMemoryBroker)
    async with serve_app(app):
        jobs = app.state.client
        first = await jobs.enqueue("count_items", {"items": ["a"]})
        await broker.wait_all()
        with monkeypatch.context() as patch:
            patch.setattr(task, "original_func", stand_in)
            second = await jobs.enqueue("count_items", {"items": ["a", "b"]})
            await broker.wait_all()
        third = await jobs.enqueue("count_items", {"items": ["a", "b", "c"]})
        await broker.wait_all()
        await app.state.runtime.recorder.flush()
        summaries = [(await jobs.get_run(run_id)).summary for run_id in (first, second, third)]
    assert calls == [{"items": ["a", "b"]}]
    assert summaries == [
        {"processed": 1, "errors": 0},
        {"stood_in": 1, "errors": 0},
        {"processed": 3, "errors": 0},
    ]
